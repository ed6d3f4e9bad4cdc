"""Re-evaluation timers for rules whose truth changes as time passes."""

from __future__ import annotations

import heapq

import numpy as np
import numpy.typing as npt

from audience_manager.engine.columns import RowArray

__all__ = ["TimerWheel"]

_EMPTY = np.zeros(0, dtype=np.int64)


class TimerWheel:
    """Rows due for re-evaluation, in slots of ``granularity`` ms.

    A slot fires once the clock reaches its start; rows in it that are not due yet are
    re-evaluated (unchanged) and scheduled again, so results are exact at any instant.
    """

    def __init__(self, granularity: int = 1000) -> None:
        self.granularity = granularity
        self.slots: dict[int, list[RowArray]] = {}
        self.heap: list[int] = []

    def schedule(self, rows: RowArray, due: npt.NDArray[np.float64]) -> None:
        """Re-evaluate each row at its ``due`` instant (``inf``: never)."""
        finite = np.isfinite(due)
        if not finite.any():
            return
        rows, slot = rows[finite], (due[finite] // self.granularity).astype(np.int64)
        order = np.argsort(slot, kind="stable")
        rows, slot = rows[order], slot[order]
        starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
        ends = np.r_[starts[1:], len(slot)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            key = int(slot[start])
            bucket = self.slots.get(key)
            if bucket is None:
                bucket = self.slots[key] = []
                heapq.heappush(self.heap, key)
            bucket.append(rows[start:end])

    def pop_due(self, now: int) -> RowArray:
        """Rows of every slot that has started by ``now``."""
        due: list[RowArray] = []
        while self.heap and self.heap[0] * self.granularity <= now:
            due.extend(self.slots.pop(heapq.heappop(self.heap)))
        return np.unique(np.concatenate(due)) if due else _EMPTY

    def __len__(self) -> int:
        return sum(len(r) for rows in self.slots.values() for r in rows)
