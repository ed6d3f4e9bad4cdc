"""Profiles of all users as columns: traits (with nested paths) and first/last seen."""

from __future__ import annotations

from typing import Any

import numpy as np

from audience_manager.engine.columns import Column, RowArray, grow
from audience_manager.rules.values import MISSING, OTHER, ValueVector

__all__ = ["ProfileTable"]

# Both times are stored so that 0 means "never seen" and a larger value is the newer
# (last) or older (first) time: last as ``t + 1``, first as ``_FIRST - t``.
_FIRST = np.iinfo(np.int64).max


class ProfileTable:
    """Traits and first/last-seen times, one row per dense user id.

    A dotted field (``address.city``) reads a derived column kept in step with the root
    trait (``address``); it is built the first time a rule asks for it.
    """

    def __init__(self) -> None:
        self.capacity = 0
        self.traits: dict[str, Column] = {}
        self.derived: dict[str, Column] = {}
        self._derived_by_root: dict[str, list[str]] = {}
        self.first_seen = np.zeros(0, dtype=np.int64)
        self.last_seen = np.zeros(0, dtype=np.int64)

    def resize(self, capacity: int) -> None:
        """Make room for rows below ``capacity``."""
        if capacity <= self.capacity:
            return
        self.capacity = capacity
        self.first_seen = grow(self.first_seen, capacity)
        self.last_seen = grow(self.last_seen, capacity)

    def see(self, rows: RowArray, ts: RowArray) -> None:
        """Record event times for first/last seen."""
        np.maximum.at(self.first_seen, rows, _FIRST - ts)
        np.maximum.at(self.last_seen, rows, ts + 1)

    def set_traits(self, key: str, rows: RowArray, values: list[Any], at: RowArray) -> RowArray:
        """Set one trait for many rows (arrival order); return the rows that changed.

        Per row the latest event time wins, ties going to the later arrival, and nothing
        older than the stored value's time is written.
        """
        column = self.traits.get(key)
        if column is None:
            column = self.traits[key] = Column(self.capacity)
        column.resize(self.capacity)
        if len(rows) > 1:
            order = np.lexsort((np.arange(len(rows)), at, rows))
            last = np.r_[rows[order][1:] != rows[order][:-1], True]
            pick = order[last]
        else:
            pick = np.arange(len(rows))
        pick = pick[at[pick] + 1 >= column.written[rows[pick]]]
        if len(pick) == 0:
            return pick
        winners = rows[pick]
        chosen = [values[i] for i in pick.tolist()]
        column.written[winners] = at[pick] + 1
        column.set_many(winners, chosen)
        for path in self._derived_by_root.get(key, ()):
            derived = self.derived[path]
            derived.resize(self.capacity)
            derived.set_many(winners, [_descend(v, path) for v in chosen])
        return np.sort(winners)

    def trait(self, row: int, key: str) -> Any:
        column = self.traits.get(key)
        return None if column is None else column.get(row)

    def traits_of(self, row: int) -> dict[str, Any]:
        """All traits of a user."""
        out: dict[str, Any] = {}
        for key, column in self.traits.items():
            if row < len(column.kind) and column.kind[row] != MISSING:
                out[key] = column.get(row)
        return out

    def trait_vector(self, path: str, rows: RowArray) -> ValueVector:
        """Values of a trait path for ``rows``."""
        column = self.traits.get(path) if "." not in path else self._derived(path)
        if column is None:
            column = self.traits[path] = Column(self.capacity)
        return column.gather(rows)

    def times(self, name: str, rows: RowArray) -> ValueVector:
        """``firstSeen`` or ``lastSeen`` of ``rows`` (missing for users never seen)."""
        stored = self.first_seen[rows] if name == "firstSeen" else self.last_seen[rows]
        ms = _FIRST - stored if name == "firstSeen" else stored - 1
        return ValueVector.times(ms.astype(np.float64), stored != 0)

    def seen(self, row: int) -> tuple[int | None, int | None]:
        """(firstSeen, lastSeen) of a user, epoch ms."""
        if row >= len(self.last_seen) or self.last_seen[row] == 0:
            return None, None
        return int(_FIRST - self.first_seen[row]), int(self.last_seen[row] - 1)

    def clear(self, row: int) -> None:
        """Erase every trait and time of a user."""
        for column in (*self.traits.values(), *self.derived.values()):
            column.clear(row)
        if row < len(self.first_seen):
            self.first_seen[row] = 0
            self.last_seen[row] = 0

    def _derived(self, path: str) -> Column:
        column = self.derived.get(path)
        if column is None:
            column = self.derived[path] = Column(self.capacity)
            root = path.split(".", 1)[0]
            self._derived_by_root.setdefault(root, []).append(path)
            source = self.traits.get(root)
            if source is not None:
                # Nested values only exist where the root holds an object.
                for row in np.flatnonzero(source.kind == OTHER).tolist():
                    column.set(row, _descend(source.other[row], path))
        return column

    def nbytes(self) -> int:
        """Bytes held by the column arrays."""
        columns = (*self.traits.values(), *self.derived.values())
        return sum(c.nbytes() for c in columns) + self.first_seen.nbytes + self.last_seen.nbytes


def _descend(value: Any, path: str) -> Any:
    for part in path.split(".")[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
