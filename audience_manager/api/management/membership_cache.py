"""Segment bitmaps held in memory for fast audience counts and overlaps.

A segment's bitmap is read from the state store the first time it is used and kept
current from then on by the membership-change log: before every read, the change records
after the last one applied are replayed (``enter``/``exit`` set a member bit, ``erase``
forgets a user everywhere, ``drop`` forgets a deleted segment).

A cache that falls behind the log's trimming (``StateStore.trim_changes``) sees a gap in
the line numbers and starts over: every bitmap is read from the store again.

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
from collections.abc import Mapping, Sequence

import numpy as np
from pyroaring import BitMap

from audience_manager.membership import (
    AudienceExpression,
    NotExpression,
    SegmentMembership,
    SegmentReference,
    count,
)
from audience_manager.store import ChangeBlock, StateStore
from audience_manager.store.base import CHANGE_KINDS

__all__ = ["MembershipCache", "latest_sequence"]

PAGE_SIZE = 10_000
_ENTER, _EXIT = CHANGE_KINDS.index("enter"), CHANGE_KINDS.index("exit")


def latest_sequence(store: StateStore) -> int:
    """The number of the newest membership-change record (0 when there is none)."""
    return store.last_change()


def _negates(expr: AudienceExpression) -> bool:
    if isinstance(expr, NotExpression):
        return True
    if isinstance(expr, SegmentReference):
        return False
    return any(_negates(operand) for operand in expr.operands)


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
            blocks = self._store.change_blocks_since(self._sequence, self._page_size)
            if blocks and blocks[0][0] > self._sequence + 1:
                # Lines not applied yet were trimmed from the log: start over from the
                # store's bitmaps, at the log's end.
                self._membership = SegmentMembership()
                self._highest = None
                self._sequence = latest_sequence(self._store)
                continue
            for first, block in blocks:
                self._apply(block)
                self._sequence = first + len(block) - 1
            if sum(len(block) for _, block in blocks) < self._page_size:
                break
        if self._highest is not None:
            fresh = self._store.users(int(self._highest.min()))
            if fresh:
                self._add_users(_bitmap_ids(fresh))

    def _apply(self, block: ChangeBlock) -> None:
        """Apply a block's lines in order: the enters and exits between two ``erase`` or
        ``drop`` lines at once, each member bit set to its latest line."""
        start = 0
        for stop in [*np.flatnonzero(block.kind > _EXIT).tolist(), len(block)]:
            self._apply_flips(block, start, stop)
            if stop < len(block):
                (line,) = block.records(stop, stop + 1)
                if line.change == "erase":
                    if line.dense >= 0:
                        self._membership.remove_user(line.dense)
                elif line.segment_id in self._membership:  # drop
                    self._membership.drop_segment(line.segment_id)
            start = stop + 1

    def _apply_flips(self, block: ChangeBlock, start: int, stop: int) -> None:
        """Enters and exits of lines ``start`` to ``stop`` of segments held in memory."""
        if stop <= start:
            return
        membership = self._membership
        held = np.array([s in membership for s in block.segments], dtype=np.bool_)
        segment, dense = block.segment[start:stop], block.dense[start:stop]
        kept = held[segment] & (dense >= 0)
        if not kept.any():
            return
        # One key per (segment, user); the first of each in reverse is the latest line.
        keys = (segment[kept].astype(np.int64) << 32) | dense[kept]
        unique, first = np.unique(keys[::-1], return_index=True)
        entered = (block.kind[start:stop][kept][::-1] == _ENTER)[first]
        segments = (unique >> 32).tolist()
        bounds = np.flatnonzero(np.diff(unique >> 32)) + 1
        for begin, end in zip([0, *bounds.tolist()], [*bounds.tolist(), len(unique)], strict=True):
            segment_id = block.segments[segments[begin]]
            ids = unique[begin:end] & 0xFFFFFFFF
            member = entered[begin:end]
            if member.any():
                membership.enter(segment_id, ids[member])
            if not member.all():
                membership.exit(segment_id, ids[~member])

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
