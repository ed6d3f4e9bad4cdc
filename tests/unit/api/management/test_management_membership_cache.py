"""The bitmap cache: loaded from the store on first use, then kept current by the
membership-change log (enter, exit, erase, drop), and counted like Python sets."""

import random
import time
from typing import Any

import pytest
from conftest import Writer

from audience_manager.api.management.membership_cache import MembershipCache, latest_sequence
from audience_manager.membership import parse_audience
from audience_manager.store import EmbeddedStateStore, StateCommit


def members(cache: MembershipCache, segment_id: str) -> set[int]:
    return set(cache.members(segment_id))


def test_latest_sequence_finds_the_newest_record(store: EmbeddedStateStore, writer: Writer) -> None:
    assert latest_sequence(store) == 0
    for size in (1, 2, 5, 60):
        writer.commit(enters={"s": range(size)})
        newest = store.changes_since(0, 1_000_000)[-1][0]
        assert latest_sequence(store) == newest


def test_a_segment_is_loaded_on_first_use_then_follows_the_log(
    store: EmbeddedStateStore, writer: Writer
) -> None:
    writer.commit(enters={"a": [1, 2, 3], "b": [3, 4]})
    cache = MembershipCache(store)
    assert members(cache, "a") == {1, 2, 3}
    assert cache.loaded() == ["a"]

    writer.commit(enters={"a": [7]}, exits={"a": [1]})
    writer.commit(enters={"a": [1]}, exits={"a": [2, 7]})
    assert members(cache, "a") == {1, 3}
    assert members(cache, "b") == {3, 4}


def test_records_committed_while_a_bitmap_loads_are_replayed_to_the_same_state(
    store: EmbeddedStateStore, writer: Writer
) -> None:
    writer.commit(enters={"a": [1]})
    cache = MembershipCache(store)
    assert members(cache, "b") == set()  # the log is read up to here
    writer.commit(enters={"a": [2]})
    writer.commit(exits={"a": [1]})
    # "a" loads now, already holding both later changes; replaying them changes nothing.
    assert members(cache, "a") == {2}
    writer.commit(enters={"a": [1]})
    assert members(cache, "a") == {1, 2}


def test_erase_forgets_a_user_everywhere_and_drop_forgets_a_segment(
    store: EmbeddedStateStore, writer: Writer
) -> None:
    writer.commit(enters={"a": [1, 2], "b": [1, 3]})
    cache = MembershipCache(store)
    assert set(cache.universe()) == {1, 2, 3}
    assert cache.overlap(["a", "b"]) == [[2, 1], [1, 2]]

    writer.commit(exits={"a": [1], "b": [1]}, erase=[1])
    assert cache.overlap(["a", "b"]) == [[1, 0], [0, 1]]
    assert set(cache.universe()) == {2, 3}

    writer.commit(drop=["b"])
    assert cache.loaded() == ["a"]
    assert members(cache, "b") == set()


def test_not_is_relative_to_every_user_with_a_profile(
    store: EmbeddedStateStore, writer: Writer
) -> None:
    writer.commit(enters={"a": [1]}, profiles=[2, 3])
    cache = MembershipCache(store)
    expression = parse_audience({"not": "a"})
    assert cache.count(expression, {"a": "a"}) == 2
    writer.commit(profiles=[4, 5])  # users without any segment
    writer.commit(erase=[2])
    assert cache.count(expression, {"a": "a"}) == 3


def test_users_of_partitions_that_number_them_apart_all_join_the_universe(
    store: EmbeddedStateStore, writer: Writer
) -> None:
    # Four partitions number their users local * 4 + partition: ids are new in every run.
    writer.commit(enters={"a": [1]}, profiles=[0, 4, 400, 2, 3, 6])
    cache = MembershipCache(store, stride=4)
    expression = parse_audience({"not": "a"})
    assert cache.count(expression, {"a": "a"}) == 6
    writer.commit(profiles=[12, 5, 7])  # 12: partition 0 has numbered up to 400 already
    assert cache.count(expression, {"a": "a"}) == 9
    writer.commit(profiles=[10])
    assert set(cache.universe()) == {0, 1, 2, 3, 4, 5, 6, 7, 10, 12, 400}


def _expression(rng: random.Random, depth: int = 0) -> Any:
    if depth >= 3 or rng.random() < 0.3:
        return rng.choice("abcde")
    kind = rng.choice(["and", "or", "not"])
    if kind == "not":
        return {"not": _expression(rng, depth + 1)}
    return {kind: [_expression(rng, depth + 1) for _ in range(rng.randint(1, 4))]}


def _expected(node: Any, sets: dict[str, set[int]], universe: set[int]) -> set[int]:
    if isinstance(node, str):
        return sets[node]
    if "not" in node:
        return universe - _expected(node["not"], sets, universe)
    parts = [_expected(operand, sets, universe) for operand in next(iter(node.values()))]
    return set.intersection(*parts) if "and" in node else set.union(*parts)


@pytest.mark.parametrize("seed", range(5))
def test_counts_match_set_algebra_while_the_log_moves(
    store: EmbeddedStateStore, writer: Writer, seed: int
) -> None:
    rng = random.Random(seed)
    sets: dict[str, set[int]] = {s: set() for s in "abcde"}
    cache = MembershipCache(store, page_size=7)  # several log pages per refresh
    resolve = {s: s for s in "abcde"}
    writer.commit(profiles=range(200))
    for round_ in range(6):
        # Like the processor: new users (with no segment yet) get ever higher dense ids.
        newcomers = range(200 + 10 * round_, 210 + 10 * round_)
        enters = {s: rng.sample(range(200), 30) for s in "abcde"}
        exits = {s: [d for d in rng.sample(range(200), 30) if d not in enters[s]] for s in "abcde"}
        writer.commit(enters=enters, exits=exits, profiles=newcomers)
        for s in "abcde":
            sets[s] = (sets[s] | set(enters[s])) - set(exits[s])
        for _ in range(10):
            raw = _expression(rng)
            expected = _expected(raw, sets, writer.users)
            assert cache.count(parse_audience(raw), resolve) == len(expected), raw


def test_a_five_operand_count_over_large_segments_takes_milliseconds(
    store: EmbeddedStateStore,
) -> None:
    size = 100_000
    enters = {s: list(range(i * 20_000, i * 20_000 + size)) for i, s in enumerate("abcde")}
    store.commit(StateCommit({}, 0, enters=enters))  # rows only: loading is not timed
    cache = MembershipCache(store)
    expression = parse_audience({"and": ["a", "b", {"or": ["c", "d"]}, {"not": "e"}]})
    resolve = {s: s for s in "abcde"}
    assert cache.count(expression, resolve) == 40_000  # loads the bitmaps
    started = time.perf_counter()
    for _ in range(10):
        assert cache.count(expression, resolve) == 40_000
    assert (time.perf_counter() - started) / 10 < 0.02
