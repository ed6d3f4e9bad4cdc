"""Re-evaluation times for rules whose truth changes as time passes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from audience_manager.engine.columns import RowArray, grow

__all__ = ["DueTimes"]

_NEVER = np.iinfo(np.int64).max
_EMPTY = np.zeros(0, dtype=np.int64)


class DueTimes:
    """When each row must next be re-evaluated: the earliest time any rule asked for.

    Memory stays at eight bytes per user however many events arrive; the earliest due time
    is tracked so that a clock tick with nothing due costs nothing. Stored as ``due + 1``
    with 0 meaning "not scheduled", so unused headroom is never resident.
    """

    def __init__(self) -> None:
        self.due = np.zeros(0, dtype=np.int64)
        self.earliest = _NEVER

    def schedule(self, rows: RowArray, due: npt.NDArray[np.float64]) -> None:
        """Re-evaluate each row by its ``due`` instant (``inf``: never); earlier times win."""
        if len(rows) == 0:
            return
        finite = np.isfinite(due)
        if not finite.any():
            return
        rows = rows[finite]
        ms = np.ceil(due[finite]).astype(np.int64) + 1
        self.due = grow(self.due, int(rows.max()) + 1)
        current = self.due[rows]
        self.due[rows] = np.where((current == 0) | (ms < current), ms, current)
        self.earliest = min(self.earliest, int(ms.min()) - 1)

    def pop_due(self, now: int) -> RowArray:
        """Rows due by ``now``; they are unscheduled until a rule schedules them again."""
        if now < self.earliest:
            return _EMPTY
        scheduled = self.due != 0
        rows = np.flatnonzero(scheduled & (self.due <= now + 1)).astype(np.int64)
        self.due[rows] = 0
        scheduled[rows] = False
        self.earliest = int(self.due[scheduled].min()) - 1 if scheduled.any() else _NEVER
        return rows

    def clear(self, row: int) -> None:
        if row < len(self.due):
            self.due[row] = 0
