from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audience_manager.membership import SegmentMembership, UnknownSegment


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def members(membership: SegmentMembership, segment_id: str) -> list[int]:
    return list(membership.members(segment_id))


def test_segments_are_created_listed_and_dropped() -> None:
    membership = SegmentMembership()
    membership.ensure_segment("vip")
    membership.ensure_segment("churn")
    membership.enter("vip", ids(1))
    membership.ensure_segment("vip")  # already there: members kept
    assert membership.segment_ids() == ["vip", "churn"]
    assert "vip" in membership
    assert membership.size("vip") == 1

    membership.drop_segment("vip")
    assert membership.segment_ids() == ["churn"]
    with pytest.raises(UnknownSegment) as raised:
        membership.drop_segment("vip")
    assert raised.value.segment_id == "vip"
    assert str(raised.value) == "unknown segment 'vip'"


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.members("nope"),
        lambda m: m.size("nope"),
        lambda m: m.contains("nope", 1),
        lambda m: m.enter("nope", ids(1)),
        lambda m: m.exit("nope", ids(1)),
        lambda m: m.page("nope", after=None, limit=10),
        lambda m: m.overlap(["vip", "nope"]),
    ],
)
def test_unknown_segments_raise_key_error(call: Callable[[SegmentMembership], object]) -> None:
    membership = SegmentMembership()
    membership.ensure_segment("vip")
    with pytest.raises(KeyError):
        call(membership)


def test_bulk_enter_exit_and_replace() -> None:
    membership = SegmentMembership()
    membership.ensure_segment("s")
    membership.enter("s", ids(5, 1, 3, 5))
    membership.enter("s", np.array([7, 9], dtype=np.uint32))
    assert members(membership, "s") == [1, 3, 5, 7, 9]
    assert list(membership.universe) == [1, 3, 5, 7, 9]

    membership.exit("s", ids(3, 9, 100))
    assert members(membership, "s") == [1, 5, 7]
    assert membership.contains("s", 5)
    assert not membership.contains("s", 3)
    assert not membership.contains("s", -1)
    assert list(membership.universe) == [1, 3, 5, 7, 9]  # exit keeps users known

    membership.replace("s", np.array([2, 4], dtype=np.int32))
    assert members(membership, "s") == [2, 4]
    membership.replace("fresh", ids(8))
    assert members(membership, "fresh") == [8]
    assert list(membership.universe) == [1, 2, 3, 4, 5, 7, 8, 9]

    membership.enter("s", ids())
    membership.exit("s", ids())
    assert membership.size("s") == 2


@pytest.mark.parametrize("bad", [ids(-1), ids(2**32), ids(1, 2**40)])
def test_ids_outside_uint32_are_rejected(bad: np.ndarray) -> None:
    membership = SegmentMembership()
    membership.ensure_segment("s")
    with pytest.raises(ValueError, match="dense user ids"):
        membership.enter("s", bad)
    with pytest.raises(ValueError, match="dense user ids"):
        membership.add_users(bad)
    assert membership.size("s") == 0


def test_remove_user_leaves_universe_and_every_segment() -> None:
    membership = SegmentMembership()
    membership.add_users(ids(0, 1, 2))
    for segment_id in ["a", "b", "c"]:
        membership.ensure_segment(segment_id)
    membership.enter("a", ids(1, 2))
    membership.enter("c", ids(1))
    assert membership.segments_of(1) == ["a", "c"]
    assert membership.segments_of(0) == []

    assert membership.remove_user(1) == ["a", "c"]
    assert membership.segments_of(1) == []
    assert list(membership.universe) == [0, 2]
    assert members(membership, "a") == [2]
    assert membership.remove_user(1) == []
    assert membership.remove_user(-5) == []
    assert membership.segments_of(2**33) == []


def test_paging_returns_every_member_once_in_ascending_order() -> None:
    rng = np.random.default_rng(7)
    expected = np.sort(rng.choice(200_000, size=25_000, replace=False))
    membership = SegmentMembership()
    membership.replace("s", rng.permutation(expected))

    pages = []
    cursor: int | None = None
    while True:
        page, cursor = membership.page("s", after=cursor, limit=1_000)
        assert len(page) <= 1_000
        pages.append(page)
        if cursor is None:
            break
        assert cursor == page[-1]
    assert len(pages) == 25  # an exact multiple ends without a trailing empty page
    collected = np.concatenate(pages)
    assert collected.dtype == np.int64
    np.testing.assert_array_equal(collected, expected)


def test_page_edges() -> None:
    membership = SegmentMembership()
    membership.replace("s", ids(10, 20, 30))
    membership.ensure_segment("empty")

    def page(after: int | None, limit: int) -> tuple[list[int], int | None]:
        values, cursor = membership.page("s", after=after, limit=limit)
        return values.tolist(), cursor

    assert page(None, 2) == ([10, 20], 20)
    assert page(20, 2) == ([30], None)
    assert page(15, 1) == ([20], 20)
    assert page(-3, 5) == ([10, 20, 30], None)
    assert page(30, 5) == ([], None)
    assert page(2**40, 5) == ([], None)
    assert membership.page("empty", after=None, limit=5)[1] is None
    with pytest.raises(ValueError, match="limit"):
        membership.page("s", after=None, limit=0)


def test_overlap_is_symmetric_with_sizes_on_the_diagonal() -> None:
    rng = np.random.default_rng(3)
    membership = SegmentMembership()
    sets = {}
    for segment_id, density in [("a", 0.1), ("b", 0.5), ("c", 0.3), ("d", 0.0)]:
        chosen = np.flatnonzero(rng.random(5_000) < density)
        membership.replace(segment_id, chosen)
        sets[segment_id] = set(chosen.tolist())

    order = ["a", "b", "c", "d", "a"]
    matrix = membership.overlap(order)
    assert matrix == [[len(sets[x] & sets[y]) for y in order] for x in order]
    assert all(matrix[i][j] == matrix[j][i] for i in range(5) for j in range(5))
    assert [matrix[i][i] for i in range(5)] == [membership.size(s) for s in order]
    assert membership.overlap([]) == []


def test_optimize_keeps_contents() -> None:
    membership = SegmentMembership()
    membership.replace("s", np.arange(0, 100_000, dtype=np.int64))
    membership.optimize()
    assert membership.size("s") == 100_000
    assert len(membership.universe) == 100_000


changes = st.lists(
    st.tuples(
        st.sampled_from(["enter", "exit", "replace", "remove"]),
        st.sampled_from(["a", "b", "c"]),
        st.lists(st.integers(0, 60), max_size=12),
    ),
    max_size=30,
)


@given(changes, st.integers(1, 7))
def test_matches_reference_sets(ops: list[tuple[str, str, list[int]]], limit: int) -> None:
    membership = SegmentMembership()
    model: dict[str, set[int]] = {s: set() for s in "abc"}
    universe: set[int] = set()
    for s in "abc":
        membership.ensure_segment(s)
    for op, segment_id, values in ops:
        dense = np.array(values, dtype=np.int64)
        if op == "enter":
            membership.enter(segment_id, dense)
            model[segment_id] |= set(values)
            universe |= set(values)
        elif op == "exit":
            membership.exit(segment_id, dense)
            model[segment_id] -= set(values)
        elif op == "replace":
            membership.replace(segment_id, dense)
            model[segment_id] = set(values)
            universe |= set(values)
        else:
            for user in values[:1]:
                left = membership.remove_user(user)
                assert left == [s for s in "abc" if user in model[s]]
                for s in "abc":
                    model[s].discard(user)
                universe.discard(user)

    assert set(membership.universe) == universe
    for segment_id, expected in model.items():
        assert set(membership.members(segment_id)) == expected
        walked: list[int] = []
        cursor: int | None = None
        while True:
            page, cursor = membership.page(segment_id, after=cursor, limit=limit)
            walked.extend(page.tolist())
            if cursor is None:
                break
        assert walked == sorted(expected)
    for user in range(61):
        assert membership.segments_of(user) == [s for s in "abc" if user in model[s]]
