"""Change-log blocks: stored and back, and blocks of the earlier forms still read."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from audience_manager.store import ChangeBlock, ChangeRecord
from audience_manager.store.base import numbered_block
from audience_manager.store.changelog import decode_block, encode_block

LINES = [
    ChangeRecord("s", "a", 0, "enter", 5),
    ChangeRecord("t", "b\n\u00e9", 70_000, "exit", 6),
    ChangeRecord("", "c", 2**40, "erase", 7),
    ChangeRecord("s", "", -1, "drop", 2**62),
    ChangeRecord("t", "a", 0, "enter", 8),
]


def test_a_block_reads_back_as_its_lines() -> None:
    block = decode_block(encode_block(ChangeBlock.of(LINES)))
    assert len(block) == len(LINES)
    assert block.records() == LINES
    assert block.records(1, 3) == LINES[1:3]


def keyed(lines: list[ChangeRecord]) -> ChangeBlock:
    block = ChangeBlock.of(lines)
    return ChangeBlock(
        block.segments, block.segment, block.user_ids, block.dense, block.kind, block.at, True
    )


@pytest.mark.parametrize("form", ["keyed", "keyed, ids far apart", "any"])
def test_users_stored_once_read_back_line_by_line(form: str) -> None:
    lines = [
        ChangeRecord("s", "a", 3, "enter", 5),
        ChangeRecord("s", "b", 4, "enter", 5),
        ChangeRecord("t", "a", 3, "exit", 5),
        ChangeRecord("s", "", -1, "drop", 6),
        ChangeRecord("", "b", 4, "erase", 6),
        ChangeRecord("t", "gone", -1, "exit", 6),  # erased: no dense id left
        ChangeRecord("t", "b", 9, "enter", 6),  # seen again: a new dense id
        ChangeRecord("u", "a", 3, "enter", 7),
    ]
    if form == "keyed, ids far apart":  # found by sorting rather than by a table
        lines = [
            line if line.dense < 0 else msgspec.structs.replace(line, dense=line.dense << 40)
            for line in lines
        ]
    block = keyed(lines) if form.startswith("keyed") else ChangeBlock.of(lines)
    back = decode_block(encode_block(block))
    assert back.records() == lines
    dtypes = [back.segment.dtype, back.kind.dtype, back.dense.dtype, back.at.dtype]
    assert dtypes == [np.int32, np.int8, np.int64, np.int64]


def test_a_user_with_two_dense_ids_keeps_both_in_an_unkeyed_block() -> None:
    lines = [ChangeRecord("s", "a", 1, "enter", 1), ChangeRecord("s", "a", 2, "enter", 1)]
    assert decode_block(encode_block(ChangeBlock.of(lines))).records() == lines


def test_a_cold_start_block_takes_a_few_bytes_a_line() -> None:
    users = [f"user-{n:06d}" for n in range(2_000)]
    lines = [
        ChangeRecord(f"segment-{s:03d}", users[u], 10 * u, "enter", 1_700_000_000_000)
        for s in range(50)
        for u in range(0, 2_000, 1 + s % 3)
    ]
    blob = encode_block(keyed(lines))
    assert decode_block(blob).records() == lines
    assert len(blob) < 5 * len(lines)  # the earlier column form took about 33


def test_an_empty_block_reads_back_empty() -> None:
    assert decode_block(encode_block([])).records() == []


def test_blocks_of_the_earlier_column_form_still_read() -> None:
    block = ChangeBlock.of(LINES)
    earlier = msgspec.msgpack.encode(
        {
            "segments": block.segments,
            "segment": block.segment.astype("<i4").tobytes(),
            "users": block.user_ids,
            "dense": block.dense.astype("<i8").tobytes(),
            "kind": block.kind.astype("i1").tobytes(),
            "at": block.at.astype("<i8").tobytes(),
        }
    )
    assert decode_block(earlier).records() == LINES


def test_a_list_of_lines_is_encoded_as_its_block() -> None:
    assert encode_block(LINES) == encode_block(ChangeBlock.of(LINES))


def test_blocks_of_the_earlier_array_form_still_read() -> None:
    earlier = msgspec.msgpack.encode(LINES)
    assert decode_block(earlier).records() == LINES


def test_blocks_concatenated_read_as_their_lines_in_order() -> None:
    blocks = [ChangeBlock.of(LINES[:2]), ChangeBlock.of([]), ChangeBlock.of(LINES[2:])]
    joined = ChangeBlock.concat(blocks)
    assert joined.records() == LINES
    assert sorted(joined.segments) == ["", "s", "t"]
    assert decode_block(encode_block(joined)).records() == LINES


def test_numbered_block_skips_lines_already_read_and_stops_at_room() -> None:
    block = ChangeBlock.of(LINES)
    first, taken = numbered_block(10, block, 11, 2)
    assert first == 12
    assert taken.records() == LINES[2:4]
    assert numbered_block(10, block, 5, 100) == (10, block)
