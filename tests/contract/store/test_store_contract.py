"""The state-store contract, run against every backend."""

from __future__ import annotations

import contextlib
import multiprocessing
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
import valkey
from services.valkey_cluster import ValkeyCluster

from audience_manager.store import (
    ChangeRecord,
    EmbeddedStateStore,
    Fenced,
    ProfileWrite,
    StateCommit,
    StateStore,
)
from audience_manager.store.base import DenseIds
from audience_manager.store.redis import RedisStateStore

BACKENDS = ["embedded", "redis", "redis-cluster", "redis-tls"]


def open_store(backend: str, location: str) -> StateStore:
    """A backend's store at ``location``: a directory, or a server URL and key prefix."""
    if backend == "embedded":
        return EmbeddedStateStore(Path(location))
    url, prefix = location.rsplit("#", 1)
    return RedisStateStore(url, prefix=prefix)


@contextlib.contextmanager
def cluster_prefix(cluster: ValkeyCluster) -> Iterator[tuple[str, str]]:
    """A key prefix whose slot another node serves than the first one, which is the one a
    store is given: it has to find the right node. Yields the first node's URL and the
    prefix; the prefix's keys are deleted afterwards."""
    while True:
        prefix = f"test-{secrets.token_hex(4)}"
        owner = cluster.owner("{" + prefix + "}")
        if owner != cluster.urls[0] or len(cluster.urls) == 1:
            break
    yield cluster.urls[0], prefix
    with valkey.Valkey.from_url(owner) as client:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1_000))
        if keys:
            client.delete(*keys)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def location(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    """Where a fresh store of the backend lives (a Redis one under a prefix of its own)."""
    if backend == "embedded":
        yield str(tmp_path / "state")
        return
    if backend == "redis-cluster":
        with cluster_prefix(request.getfixturevalue("valkey_cluster")) as (url, prefix):
            yield f"{url}#{prefix}"
        return
    server = request.getfixturevalue("valkey_tls" if backend == "redis-tls" else "valkey_server")
    with server.prefix() as prefix:
        yield f"{server.url}#{prefix}"


@pytest.fixture
def store(backend: str, location: str) -> Iterator[StateStore]:
    opened = open_store(backend, location)
    yield opened
    opened.close()


def doc(user_id: str, **extra: object) -> bytes:
    return msgspec.json.encode({"userId": user_id, **extra})


def profiles(*users: tuple[int, str]) -> list[ProfileWrite]:
    return [ProfileWrite(dense, user, doc(user)) for dense, user in users]


def test_a_commit_is_read_back_whole(store: StateStore) -> None:
    store.commit(
        StateCommit(
            positions={0: 5, 1: 3},
            now=1000,
            profiles=profiles((0, "alice"), (1, "bob"), (2, "carol")),
            enters={"vip": [0, 2], "new": [1]},
            applied=8,
        )
    )
    assert store.positions() == {0: 5, 1: 3}
    assert store.profile("alice") == doc("alice")
    assert store.profile("nobody") is None
    assert store.user_segments("alice") == ["vip"]
    assert store.members("vip", None, 10) == (["alice", "carol"], None)
    assert store.sizes() == {"vip": 2, "new": 1}
    assert sorted(store.bitmap("vip")) == [0, 2]
    assert store.applied() == 8
    assert sorted(store.users()) == [0, 1, 2]
    assert sorted(store.users(after=0)) == [1, 2]


def test_enters_and_exits_keep_sizes_exact(store: StateStore) -> None:
    store.commit(StateCommit({0: 1}, 1, profiles((0, "a"), (1, "b")), enters={"s": [0, 1]}))
    # Entering twice and leaving a non-member change nothing.
    store.commit(StateCommit({0: 2}, 2, enters={"s": [1]}, exits={"s": [7]}))
    store.commit(StateCommit({0: 3}, 3, exits={"s": [0]}))
    assert store.sizes() == {"s": 1}
    assert store.members("s", None, 10) == (["b"], None)


def test_members_page_in_stable_order(store: StateStore) -> None:
    users = [(i, f"user-{i:04d}") for i in range(2_500)]
    store.commit(StateCommit({0: 1}, 1, profiles(*users), enters={"all": [d for d, _ in users]}))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.members("all", cursor, 1_000)
        seen.extend(page)
        if cursor is None:
            break
    assert seen == [u for _, u in users]


def test_replaced_and_dropped_segments(store: StateStore) -> None:
    store.commit(
        StateCommit({0: 1}, 1, profiles((0, "a"), (1, "b"), (2, "c")), enters={"s": [0, 1]})
    )
    store.commit(StateCommit({0: 2}, 2, replaced={"s": [2]}, enters={"t": [0]}))
    assert store.members("s", None, 10) == (["c"], None)
    store.commit(StateCommit({0: 3}, 3, dropped=["s"]))
    assert store.sizes() == {"t": 1}
    assert store.user_segments("c") == []


def test_erasing_a_user_removes_profile_and_memberships(store: StateStore) -> None:
    store.commit(StateCommit({0: 1}, 1, profiles((0, "a"), (1, "b")), enters={"s": [0, 1]}))
    # The erasure and a new user in one commit, their ids in the same byte of a bitmap.
    erase = [ProfileWrite(0, "a", None), *profiles((2, "c"))]
    store.commit(StateCommit({0: 2}, 2, erase, exits={"s": [0]}, enters={"s": [2]}))
    assert store.profile("a") is None
    assert store.members("s", None, 10) == (["b", "c"], None)
    assert store.sizes() == {"s": 2}
    assert sorted(store.users()) == [1, 2]
    assert store.user_segments("a") == []


def test_erasing_many_users_at_once(store: StateStore) -> None:
    users = [(d, f"u{d}") for d in range(0, 3_000, 3)]
    dense = [d for d, _ in users]
    store.commit(StateCommit({0: 1}, 1, profiles(*users), enters={"s": dense, "t": dense[::2]}))
    gone = dense[1::2] + dense[:100:2]
    store.commit(StateCommit({0: 2}, 2, [ProfileWrite(d, f"u{d}", None) for d in gone]))
    left = sorted(set(dense) - set(gone))
    assert sorted(store.bitmap("s")) == left
    assert sorted(store.bitmap("t")) == dense[100::2]
    assert store.sizes() == {"s": len(left), "t": len(dense[100::2])}
    assert sorted(store.users()) == left


@pytest.mark.parametrize("form", ["lists", "arrays"])
def test_dense_and_sparse_changes_in_one_commit_with_an_erasure(
    store: StateStore, form: str
) -> None:
    # Segments whose changes are close together and segments whose changes are far apart,
    # entering and leaving in one commit while a member is erased; the processor hands
    # over arrays of dense ids, other writers lists.
    def ids(changes: dict[str, list[int]]) -> dict[str, DenseIds]:
        if form == "lists":
            return dict(changes)
        return {s: np.array(dense, np.int64) for s, dense in changes.items()}

    users = [(d, f"u{d}") for d in [*range(0, 2_000), 100_000, 900_001]]
    dense = [d for d, _ in users]
    first = ids({"close": dense[:1_500], "far": [5, 900_001]})
    store.commit(StateCommit({0: 1}, 1, profiles(*users), enters=first))
    erased = ProfileWrite(7, "u7", None)
    entered = ids({"close": list(range(1_500, 2_000)), "far": [100_000], "new": dense[::3]})
    exited = ids({"close": list(range(0, 1_500, 2)), "far": [5], "new": [900_001]})
    store.commit(StateCommit({0: 2}, 2, [erased], enters=entered, exits=exited))
    expected = {
        "close": sorted({*range(1, 1_500, 2), *range(1_500, 2_000)} - {7}),
        "far": [100_000, 900_001],
        "new": sorted(set(dense[::3]) - {7, 900_001}),
    }
    for segment_id, members in expected.items():
        assert sorted(store.bitmap(segment_id)) == members
    assert store.sizes() == {s: len(m) for s, m in expected.items()}
    assert store.user_segments("u7") == []


def test_members_far_apart_page_in_order_and_are_erased_alone(store: StateStore) -> None:
    # Dense ids on both sides of 2**16 and far above it.
    users = [(d, f"u{d}") for d in (3, 65_535, 65_536, 65_537, 400_000, 4_000_000)]
    dense = [d for d, _ in users]
    store.commit(StateCommit({0: 1}, 1, profiles(*users), enters={"s": dense, "t": dense[:3]}))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.members("s", cursor, 2)
        seen.extend(page)
        if cursor is None:
            break
    assert seen == [u for _, u in users]
    assert sorted(store.bitmap("s")) == dense
    assert store.user_segments("u65535") == ["s", "t"]
    store.commit(StateCommit({0: 2}, 2, [ProfileWrite(65_535, "u65535", None)]))
    assert sorted(store.bitmap("s")) == [d for d in dense if d != 65_535]
    assert sorted(store.bitmap("t")) == [3, 65_536]
    assert store.sizes() == {"s": 5, "t": 2}
    assert store.user_segments("u65536") == ["s", "t"]
    store.commit(StateCommit({0: 3}, 3, exits={"t": [3, 65_536]}))
    assert store.sizes() == {"s": 5, "t": 0}
    assert store.members("t", None, 10) == ([], None)


def test_the_change_log_numbers_lines_across_commits(store: StateStore) -> None:
    assert store.last_change() == 0
    assert store.changes_since(0) == []
    lines = [ChangeRecord("s", f"u{i}", i, "enter", 10 + i) for i in range(7)]
    store.commit(StateCommit({0: 1}, 1, changes=lines[:3]))
    store.commit(StateCommit({0: 2}, 2))  # no changes: no lines
    store.commit(StateCommit({0: 3}, 3, changes=lines[3:]))
    assert store.last_change() == 7
    assert store.changes_since(0) == list(enumerate(lines, start=1))
    assert store.changes_since(2, limit=3) == [(3, lines[2]), (4, lines[3]), (5, lines[4])]
    assert store.changes_since(7) == []


def test_the_change_log_reads_across_many_commits(store: StateStore) -> None:
    lines = [ChangeRecord("s", f"u{i}", i, "enter", i) for i in range(40)]
    for i in range(20):
        store.commit(StateCommit({0: i + 1}, i, changes=lines[2 * i : 2 * i + 2]))
    assert store.changes_since(0) == list(enumerate(lines, start=1))
    assert store.changes_since(5, limit=30) == list(enumerate(lines, start=1))[5:35]


def test_trimmed_change_blocks_leave_a_gap_and_the_numbering_goes_on(
    store: StateStore,
) -> None:
    lines = [ChangeRecord("s", f"u{i}", i, "enter", i) for i in range(9)]
    for i in range(3):
        store.commit(StateCommit({0: i + 1}, i, changes=lines[3 * i : 3 * i + 3]))
    store.trim_changes(4)  # the first block only: the second still holds line 5
    assert store.changes_since(0)[0] == (4, lines[3])
    store.trim_changes(100)  # the newest block stays
    assert store.changes_since(0) == list(enumerate(lines, start=1))[6:]
    assert store.last_change() == 9
    store.commit(StateCommit({0: 4}, 4, changes=[ChangeRecord("s", "x", 9, "exit", 9)]))
    assert store.last_change() == 10
    assert store.changes_since(8) == [(9, lines[8]), (10, ChangeRecord("s", "x", 9, "exit", 9))]
    store.trim_changes(0)  # nothing to forget
    assert len(store.changes_since(0)) == 4


def test_users_above_a_dense_id(store: StateStore) -> None:
    dense = [3, 65_535, 65_536, 200_000, 4_000_000]
    store.commit(StateCommit({0: 1}, 1, profiles(*((d, f"u{d}") for d in dense))))
    assert sorted(store.users()) == dense
    assert sorted(store.users(after=65_535)) == [65_536, 200_000, 4_000_000]
    assert sorted(store.users(after=4_000_000)) == []
    store.commit(StateCommit({0: 2}, 2, [ProfileWrite(65_536, "u65536", None)]))
    assert sorted(store.users(after=3)) == [65_535, 200_000, 4_000_000]


def test_requests_wait_in_order_for_their_answers(store: StateStore) -> None:
    first = store.submit("count", b"one")
    time.sleep(0.002)  # the embedded store orders by the millisecond of submission
    second = store.submit("backfill", b"two")
    assert store.pending() == [(first, "count", b"one"), (second, "backfill", b"two")]
    assert store.pending(limit=1) == [(first, "count", b"one")]
    assert store.response(first) is None
    store.respond(first, b"answer")
    assert store.response(first) == b"answer"
    assert store.pending() == [(second, "backfill", b"two")]


def test_requests_addressed_to_partitions_go_to_their_holders(store: StateStore) -> None:
    loose = store.submit("preview", b"any")
    time.sleep(0.002)
    to_zero = store.submit("explain", b"zero", partition=0)
    time.sleep(0.002)
    to_two = store.submit("preview", b"two", partition=2)
    assert store.pending() == [(loose, "preview", b"any")]
    assert store.pending(partitions=[0, 1]) == [(to_zero, "explain", b"zero")]
    assert store.pending(partitions={2, 0}) == [
        (to_zero, "explain", b"zero"),
        (to_two, "preview", b"two"),
    ]
    assert store.pending(limit=1, partitions=[2, 0]) == [(to_zero, "explain", b"zero")]
    assert store.pending(partitions=[]) == []
    store.respond(to_zero, b"done")
    assert store.response(to_zero) == b"done"
    assert store.pending(partitions=[0, 2]) == [(to_two, "preview", b"two")]
    assert store.pending() == [(loose, "preview", b"any")]


def test_a_commit_from_positions_that_moved_on_is_fenced_off(store: StateStore) -> None:
    store.commit(StateCommit({0: 5, 1: 7}, 1, base={0: 0, 1: 0}))
    stale = StateCommit(
        {0: 6},
        2,
        profiles((0, "a")),
        enters={"s": [0]},
        applied=1,
        changes=[ChangeRecord("s", "a", 0, "enter", 2)],
        base={0: 4},
    )
    with pytest.raises(Fenced, match="partitions moved on"):
        store.commit(stale)
    assert store.positions() == {0: 5, 1: 7}
    assert (store.applied(), store.last_change(), store.sizes()) == (0, 0, {})
    assert store.profile("a") is None
    store.commit(StateCommit({0: 6}, 3, base={0: 5}))  # only the partitions it names count
    store.commit(StateCommit({2: 1}, 4, base={2: 0}))  # a partition never committed is at 0
    assert store.positions() == {0: 6, 1: 7, 2: 1}


def test_journal_records_batches_until_a_snapshot_covers_them(store: StateStore) -> None:
    for offset in (3, 6, 9):
        store.commit(StateCommit({0: offset, 1: offset // 3}, 1000 + offset))
    assert [e.now for e in store.journal()] == [1003, 1006, 1009]
    store.prune_journal({0: 6, 1: 2})
    assert [(e.positions, e.now) for e in store.journal()] == [({0: 9, 1: 3}, 1009)]


def test_a_commit_applied_again_changes_nothing(store: StateStore) -> None:
    first = StateCommit(
        {0: 1},
        1,
        profiles((0, "a")),
        enters={"s": [0]},
        applied=1,
        changes=[ChangeRecord("s", "a", 0, "enter", 1)],
    )
    store.commit(first)
    store.commit(first)  # a retry, as after a connection lost before the answer
    store.commit(StateCommit({0: 2}, 2, exits={"s": [0]}, applied=1))
    assert store.applied() == 2
    assert store.last_change() == 1
    assert len(store.journal()) == 2
    assert store.sizes() == {"s": 0}


def _move_users(backend: str, location: str, rounds: int) -> None:
    writer = open_store(backend, location)
    for i in range(rounds):
        a, b = ("left", "right") if i % 2 == 0 else ("right", "left")
        writer.commit(StateCommit({0: i + 2}, i, enters={b: range(100)}, exits={a: range(100)}))
    writer.close()


def test_readers_in_other_processes_see_whole_commits_only(
    store: StateStore, backend: str, location: str
) -> None:
    users = [(i, f"u{i}") for i in range(100)]
    store.commit(StateCommit({0: 1}, 0, profiles(*users), enters={"left": range(100)}))
    writer = multiprocessing.get_context("spawn").Process(
        target=_move_users, args=(backend, location, 200)
    )
    writer.start()
    checks = 0
    while writer.is_alive() or checks == 0:
        sizes = store.sizes()
        assert sizes.get("left", 0) + sizes.get("right", 0) == 100, sizes
        checks += 1
    writer.join()
    assert writer.exitcode == 0
    assert store.positions() == {0: 201}


def test_markers_are_kept_by_name(store: StateStore) -> None:
    assert store.marker("relayed") == 0
    store.set_marker("relayed", 41)
    store.set_marker("relayed", 42)
    store.set_marker("other", 7)
    assert (store.marker("relayed"), store.marker("other")) == (42, 7)


def _commit_partition(backend: str, location: str, partition: int, rounds: int) -> None:
    """Commit ``rounds`` batches of one partition of two (its users: dense ids ``n * 2 + p``),
    each writing profiles, members and change lines, as one of two processors would."""
    writer = open_store(backend, location)
    for i in range(rounds):
        dense = [(i * 500 + n) * 2 + partition for n in range(500)]
        writer.commit(
            StateCommit(
                {partition: i + 1},
                i,
                profiles(*((d, f"u{d}") for d in dense)),
                enters={"s": dense},
                applied=500,
                changes=[ChangeRecord("s", f"u{d}", d, "enter", i) for d in dense],
                base={partition: i},
            )
        )
    writer.close()


def test_processors_committing_at_once_all_get_through(backend: str, location: str) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_commit_partition, args=(backend, location, partition, 30))
        for partition in (0, 1)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    store = open_store(backend, location)
    assert store.positions() == {0: 30, 1: 30}
    assert (store.applied(), store.last_change(), store.sizes()) == (30_000, 30_000, {"s": 30_000})
    lines = store.changes_since(0, limit=30_000)
    assert [n for n, _ in lines] == list(range(1, 30_001))
    assert sorted(line.dense for _, line in lines) == list(range(30_000))
    store.close()
