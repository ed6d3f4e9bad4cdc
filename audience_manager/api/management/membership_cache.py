"""Segment bitmaps held in memory for fast audience counts and overlaps.

A segment's bitmap is read from the state store the first time it is used and kept
current from then on by the membership-change log: before every read, the change records
after the last one applied are replayed (``enter``/``exit`` set a member bit, ``erase``
forgets a user everywhere, ``drop`` forgets a deleted segment).

Why replaying is exact: a bitmap is loaded *after* the log has been applied up to some
record S, so it reflects every record up to S and maybe a few later ones. Replaying the
records after S in order sets each member bit to the value of its latest record, which
is what the store holds too.

``not`` is taken relative to every user with a stored profile (``StateStore.users``),
loaded on the first expression that negates and then extended with the users whose dense
ids are above the highest seen. New users only ever get higher ids within a run of ids
(``stride``): one run when one processor numbers every user, one per partition when
processors share the partitions, so the cache asks for the ids above the lowest of the
runs' highest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pyroaring import BitMap

from audience_manager.membership import (
    AudienceExpression,
    NotExpression,
    SegmentMembership,
    SegmentReference,
    count,
)
from audience_manager.store import ChangeRecord, StateStore

__all__ = ["MembershipCache", "latest_sequence"]

PAGE_SIZE = 10_000


def latest_sequence(store: StateStore) -> int:
    """The number of the newest membership-change record (0 when there is none)."""
    return store.last_change()


def _negates(expr: AudienceExpression) -> bool:
    if isinstance(expr, NotExpression):
        return True
    if isinstance(expr, SegmentReference):
        return False
    return any(_negates(operand) for operand in expr.operands)


def _dense(values: Iterable[int]) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    return np.fromiter(values, dtype=np.int64)


def _bitmap_ids(bitmap: BitMap) -> np.ndarray[tuple[int], np.dtype[np.uint32]]:
    """A bitmap's ids as a numpy array, without a Python int per member."""
    return np.frombuffer(bitmap.to_array(), dtype=np.uint32)


class MembershipCache:
    """Bitmaps of the segments in use, kept current from the change log; thread-safe."""

    def __init__(self, store: StateStore, page_size: int = PAGE_SIZE, stride: int = 1) -> None:
        self._store = store
        self._page_size = page_size
        self._stride = stride
        self._membership = SegmentMembership()
        self._sequence: int | None = None  # the last change record applied
        # The highest user id of each run (id % stride); None until the universe is loaded.
        self._highest: np.ndarray[tuple[int], np.dtype[np.int64]] | None = None
        self._lock = threading.Lock()

    @property
    def sequence(self) -> int | None:
        """The last change record applied (None before the first read)."""
        return self._sequence

    def count(self, expr: AudienceExpression, resolve: Mapping[str, str]) -> int:
        """The size of an audience; ``resolve`` maps each segment key in it to an id."""
        with self._lock:
            self._refresh()
            self._load(set(resolve.values()))
            if _negates(expr):
                self._load_universe()
            return count(expr, self._membership, resolve.__getitem__)

    def overlap(self, segment_ids: Sequence[str]) -> list[list[int]]:
        """Pairwise intersection sizes; the diagonal holds each segment's size."""
        with self._lock:
            self._refresh()
            self._load(set(segment_ids))
            return self._membership.overlap(segment_ids)

    def members(self, segment_id: str) -> BitMap:
        """A copy of a segment's current member bitmap."""
        with self._lock:
            self._refresh()
            self._load({segment_id})
            return self._membership.members(segment_id).copy()

    def universe(self) -> BitMap:
        """A copy of the dense ids of every user with a profile."""
        with self._lock:
            self._refresh()
            self._load_universe()
            return self._membership.universe.copy()

    def loaded(self) -> list[str]:
        """The segments held in memory (after applying the log)."""
        with self._lock:
            self._refresh()
            return self._membership.segment_ids()

    # -- internals (called with the lock held) ----------------------------------------

    def _refresh(self) -> None:
        if self._sequence is None:
            # Nothing is loaded yet: start at the log's end, bitmaps come from the store.
            self._sequence = latest_sequence(self._store)
        while True:
            page = self._store.changes_since(self._sequence, self._page_size)
            if not page:
                break
            self._apply(record for _, record in page)
            self._sequence = page[-1][0]
            if len(page) < self._page_size:
                break
        if self._highest is not None:
            fresh = self._store.users(int(self._highest.min()))
            if fresh:
                self._add_users(_bitmap_ids(fresh))

    def _apply(self, records: Iterable[ChangeRecord]) -> None:
        membership = self._membership
        latest: dict[tuple[str, int], bool] = {}  # (segment, user) -> member after the last

        def flush() -> None:
            enters: dict[str, list[int]] = {}
            exits: dict[str, list[int]] = {}
            for (segment_id, dense), member in latest.items():
                (enters if member else exits).setdefault(segment_id, []).append(dense)
            for segment_id, entered in enters.items():
                membership.enter(segment_id, _dense(entered))
            for segment_id, exited in exits.items():
                membership.exit(segment_id, _dense(exited))
            latest.clear()

        for record in records:
            if record.change == "erase":
                flush()
                if record.dense >= 0:
                    membership.remove_user(record.dense)
            elif record.change == "drop":
                flush()
                if record.segment_id in membership:
                    membership.drop_segment(record.segment_id)
            elif record.dense >= 0 and record.segment_id in membership:
                latest[(record.segment_id, record.dense)] = record.change == "enter"
        flush()

    def _load(self, segment_ids: set[str]) -> None:
        for segment_id in sorted(segment_ids):
            if segment_id not in self._membership:
                bitmap = self._store.bitmap(segment_id)
                self._membership.replace(segment_id, _bitmap_ids(bitmap))

    def _load_universe(self) -> None:
        if self._highest is None:
            self._highest = np.full(self._stride, -1, dtype=np.int64)
            self._add_users(_bitmap_ids(self._store.users()))

    def _add_users(self, ids: np.ndarray[tuple[int], np.dtype[np.uint32]]) -> None:
        assert self._highest is not None
        self._membership.add_users(ids)
        wide = ids.astype(np.int64)
        runs = wide % self._stride
        for run in np.unique(runs):
            self._highest[run] = max(self._highest[run], wide[runs == run].max())
