"""The relay's messages: one per user, its lines in log order, every line once.

Lines carry dense ids as the store writes them: one per user (``drop`` lines: -1).
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from audience_manager.processor.relay import CHANGES_PER_MESSAGE, change_messages
from audience_manager.store import ChangeBlock, ChangeRecord

LINES = [
    ChangeRecord('seg "x"\n', 'u\u00e9"\\', 3, "enter", 10),
    ChangeRecord("", "u2", 4, "erase", 11),
    ChangeRecord("s2", "u3", 5, "exit", 2**40),
    ChangeRecord("s", "", -1, "drop", 0),
    ChangeRecord("s2", 'u\u00e9"\\', 3, "exit", 12),
    ChangeRecord("s2", "u3", 5, "enter", 13),
]


def lines_of(keys: list[str], values: list[bytes]) -> list[dict[str, Any]]:
    """Every line the messages carry, as ``{"userId", "segmentId", "change", "at",
    "sequence"}``, checking that each message's key is its user."""
    found = []
    for key, value in zip(keys, values, strict=True):
        message = msgspec.json.decode(value)
        assert set(message) == {"userId", "changes"}
        assert message["userId"] == key
        found += [{"userId": key, **change} for change in message["changes"]]
    return found


def expected(first: int, lines: list[ChangeRecord]) -> list[dict[str, Any]]:
    return [
        {
            "userId": line.user_id,
            "segmentId": line.segment_id,
            "change": line.change,
            "at": line.at,
            "sequence": first + i,
        }
        for i, line in enumerate(lines)
    ]


def test_one_message_per_user_with_its_lines_in_order() -> None:
    keys, values = change_messages([(7, ChangeBlock.of(LINES))])
    assert sorted(keys) == sorted(['u\u00e9"\\', "u2", "u3", ""])
    found = lines_of(keys, values)
    assert sorted(found, key=lambda line: line["sequence"]) == expected(7, LINES)
    by_user: dict[str, list[int]] = {}
    for line in found:
        by_user.setdefault(line["userId"], []).append(line["sequence"])
    assert by_user == {'u\u00e9"\\': [7, 11], "u2": [8], "u3": [9, 12], "": [10]}


def test_lines_of_several_blocks_are_grouped_across_them() -> None:
    blocks = [(1, ChangeBlock.of(LINES[:3])), (4, ChangeBlock.of(LINES[3:]))]
    keys, values = change_messages(blocks)
    assert len(keys) == 4  # u3's lines from both blocks share a message
    assert sorted(lines_of(keys, values), key=lambda line: line["sequence"]) == expected(1, LINES)


def test_a_user_with_many_lines_gets_several_messages_in_order() -> None:
    count = 2 * CHANGES_PER_MESSAGE + 3
    many = [ChangeRecord(f"s{i}", "busy", 1, "enter", i) for i in range(count)]
    keys, values = change_messages([(1, ChangeBlock.of(many))])
    assert keys == ["busy"] * 3
    sizes = [len(msgspec.json.decode(v)["changes"]) for v in values]
    assert sizes == [CHANGES_PER_MESSAGE, CHANGES_PER_MESSAGE, 3]
    assert [line["sequence"] for line in lines_of(keys, values)] == list(range(1, count + 1))


def test_a_large_block_matches_line_by_line_encoding() -> None:
    rng = np.random.default_rng(5)
    size = 5_000
    segments = [f"segment-{i}" for i in range(40)]
    users = rng.integers(0, 700, size).tolist()
    kinds = ("enter", "exit")
    many = [
        ChangeRecord(segments[s], f"user-{u}", u, kinds[k], int(at))
        for s, u, k, at in zip(
            rng.integers(0, 40, size).tolist(),
            users,
            rng.integers(0, 2, size).tolist(),
            rng.integers(0, 2**50, size).tolist(),
            strict=True,
        )
    ]
    keys, values = change_messages([(100, ChangeBlock.of(many))])
    assert len(keys) == len(set(users))
    found = sorted(lines_of(keys, values), key=lambda line: line["sequence"])
    assert found == expected(100, many)


def test_no_lines_no_messages() -> None:
    assert change_messages([]) == ([], [])
    assert change_messages([(1, ChangeBlock.of([]))]) == ([], [])


def test_line_numbers_around_thousands_and_large_ones() -> None:
    lines = [ChangeRecord("s", f"u{i % 3}", i % 3, "enter", 5) for i in range(7)]
    for first in (1, 995, 999_998, 10**12 - 3):
        keys, values = change_messages([(first, ChangeBlock.of(lines))])
        found = sorted(lines_of(keys, values), key=lambda line: line["sequence"])
        assert found == expected(first, lines)


def test_a_user_erased_and_seen_again_keeps_its_lines_in_log_order() -> None:
    lines = [
        ChangeRecord("s", "back", 2, "enter", 1),
        ChangeRecord("", "back", 2, "erase", 2),
        ChangeRecord("s", "other", 1, "enter", 2),
        ChangeRecord("s", "back", 9, "enter", 3),  # a new dense id
    ]
    keys, values = change_messages([(1, ChangeBlock.of(lines))])
    found = lines_of(keys, values)
    assert [line["sequence"] for line in found if line["userId"] == "back"] == [1, 2, 4]
    assert sorted(found, key=lambda line: line["sequence"]) == expected(1, lines)


def test_a_line_without_the_users_dense_id_joins_the_users_messages_in_log_order() -> None:
    lines = [
        ChangeRecord("s", "gone", 4, "enter", 1),
        ChangeRecord("s", "", -1, "drop", 2),
        ChangeRecord("t", "kept", 5, "enter", 2),
        ChangeRecord("t", "gone", -1, "exit", 3),  # the user was forgotten meanwhile
    ]
    keys, values = change_messages([(1, ChangeBlock.of(lines))])
    assert keys == ["gone", "", "kept"]
    found = lines_of(keys, values)
    assert [line["sequence"] for line in found] == [1, 4, 2, 3]
    assert sorted(found, key=lambda line: line["sequence"]) == expected(1, lines)
