"""Segment membership as Roaring bitmaps of dense user ids.

One bitmap per segment, plus the universe of every known user, which ``not`` is taken
relative to. Every segment bitmap is kept a subset of the universe.
"""

from __future__ import annotations

import array
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

__all__ = ["SegmentMembership", "UnknownSegment"]

_UINT32_MAX = 2**32 - 1


class UnknownSegment(KeyError):
    """A segment id that the membership does not hold."""

    def __init__(self, segment_id: str) -> None:
        super().__init__(segment_id)
        self.segment_id = segment_id

    def __str__(self) -> str:
        return f"unknown segment {self.segment_id!r}"


def _as_uint32(dense: npt.NDArray[np.integer]) -> array.array[int]:
    """Convert dense ids to ``array('I')``: BitMap consumes it far faster than numpy."""
    if dense.dtype != np.uint32 and dense.size:
        low, high = int(dense.min()), int(dense.max())
        if low < 0 or high > _UINT32_MAX:
            raise ValueError(f"dense user ids must be in [0, {_UINT32_MAX}], got {low}..{high}")
    return array.array("I", np.ascontiguousarray(dense, dtype=np.uint32).tobytes())


class SegmentMembership:
    """Members of every segment, as one Roaring bitmap of dense user ids per segment.

    Bitmaps returned by :meth:`members` and :attr:`universe` are the live ones, shared
    for speed: treat them as read-only and ``copy()`` before changing them.
    """

    __slots__ = ("_segments", "_universe")

    def __init__(self) -> None:
        self._segments: dict[str, BitMap] = {}
        self._universe = BitMap()

    def __repr__(self) -> str:
        return f"SegmentMembership(segments={len(self._segments)}, users={len(self._universe)})"

    def __contains__(self, segment_id: object) -> bool:
        return segment_id in self._segments

    def __len__(self) -> int:
        """Number of segments."""
        return len(self._segments)

    def __iter__(self) -> Iterator[str]:
        return iter(self._segments)

    # -- users -------------------------------------------------------------------------

    @property
    def universe(self) -> BitMap:
        """Every known user (read-only view)."""
        return self._universe

    def add_users(self, dense: npt.NDArray[np.integer]) -> None:
        """Add dense ids to the universe of known users."""
        self._universe.update(_as_uint32(dense))

    def remove_user(self, dense: int) -> list[str]:
        """Remove a user from the universe and every segment; return the segments it left."""
        left: list[str] = []
        if not 0 <= dense <= _UINT32_MAX:
            return left
        for segment_id, members in self._segments.items():
            if dense in members:
                members.discard(dense)
                left.append(segment_id)
        self._universe.discard(dense)
        return left

    def segments_of(self, dense: int) -> list[str]:
        """The segments a user belongs to, in segment creation order."""
        if not 0 <= dense <= _UINT32_MAX:
            return []
        return [segment_id for segment_id, members in self._segments.items() if dense in members]

    # -- segments ----------------------------------------------------------------------

    def segment_ids(self) -> list[str]:
        """Every segment id, in creation order."""
        return list(self._segments)

    def ensure_segment(self, segment_id: str) -> None:
        """Create an empty segment unless it already exists."""
        if segment_id not in self._segments:
            self._segments[segment_id] = BitMap()

    def drop_segment(self, segment_id: str) -> None:
        """Delete a segment and its members; UnknownSegment if it does not exist."""
        if self._segments.pop(segment_id, None) is None:
            raise UnknownSegment(segment_id)

    def enter(self, segment_id: str, dense: npt.NDArray[np.integer]) -> None:
        """Add users to a segment (and to the universe)."""
        members = self.members(segment_id)
        values = _as_uint32(dense)
        members.update(values)
        self._universe.update(values)

    def exit(self, segment_id: str, dense: npt.NDArray[np.integer]) -> None:
        """Remove users from a segment."""
        self.members(segment_id).difference_update(BitMap(_as_uint32(dense)))

    def replace(self, segment_id: str, dense: npt.NDArray[np.integer]) -> None:
        """Set the whole membership of a segment, creating the segment if needed."""
        values = _as_uint32(dense)
        members = BitMap(values)
        self._universe.update(values)
        self._segments[segment_id] = members

    def optimize(self) -> None:
        """Compact every bitmap (run-length containers, no spare capacity)."""
        for members in (*self._segments.values(), self._universe):
            members.run_optimize()
            members.shrink_to_fit()

    # -- reads -------------------------------------------------------------------------

    def members(self, segment_id: str) -> BitMap:
        """The member bitmap of a segment (read-only view); UnknownSegment if absent."""
        try:
            return self._segments[segment_id]
        except KeyError:
            raise UnknownSegment(segment_id) from None

    def size(self, segment_id: str) -> int:
        """Number of members of a segment."""
        return len(self.members(segment_id))

    def contains(self, segment_id: str, dense: int) -> bool:
        """Whether a user is a member of a segment."""
        members = self.members(segment_id)
        return 0 <= dense <= _UINT32_MAX and dense in members

    def page(
        self, segment_id: str, *, after: int | None, limit: int
    ) -> tuple[npt.NDArray[np.int64], int | None]:
        """Up to ``limit`` members in ascending id order, strictly after ``after``.

        Returns the members and the cursor for the next page: the last id returned, or
        None when no member follows it. Cost depends on ``limit``, not on the depth.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        members = self.members(segment_id)
        if after is None or after < 0:
            start = 0
        elif after > _UINT32_MAX:
            start = len(members)
        else:
            start = members.rank(after)  # members <= after
        stop = min(start + limit, len(members))
        if start >= stop:
            return np.empty(0, dtype=np.int64), None
        chunk = np.frombuffer(members[start:stop].to_array(), dtype=np.uint32)
        cursor = int(chunk[-1]) if stop < len(members) else None
        return chunk.astype(np.int64), cursor

    def overlap(self, segment_ids: Sequence[str]) -> list[list[int]]:
        """Pairwise intersection sizes of segments; the diagonal holds each one's size."""
        bitmaps = [self.members(segment_id) for segment_id in segment_ids]
        matrix = [[0] * len(bitmaps) for _ in bitmaps]
        for i, first in enumerate(bitmaps):
            matrix[i][i] = len(first)
            for j in range(i + 1, len(bitmaps)):
                matrix[i][j] = matrix[j][i] = first.intersection_cardinality(bitmaps[j])
        return matrix
