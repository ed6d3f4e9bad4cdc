"""Growable typed columns: one attribute for every user, in a few bytes per user.

A column keeps a kind byte, a float64 and a string code per row; lists, objects and huge
integers live in a side dict for the few rows that have them. A profile with ten traits
therefore costs about 130 bytes, not the kilobytes of a dict of Python objects.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from audience_manager.rules.values import (
    MISSING,
    OTHER,
    STR,
    StringDictionary,
    ValueVector,
    classify,
)

__all__ = ["Column", "RowArray", "grow"]

RowArray = npt.NDArray[np.int64]
T = TypeVar("T", bound=np.generic)


def grow(array: npt.NDArray[T], capacity: int, fill: Any = 0) -> npt.NDArray[T]:
    """``array`` extended to ``capacity`` rows, new rows set to ``fill``."""
    if len(array) >= capacity:
        return array
    extended = np.full(capacity, fill, dtype=array.dtype)
    extended[: len(array)] = array
    return extended


class Column:
    """Values of one attribute by row, with the event time each was written at."""

    __slots__ = ("code", "kind", "num", "other", "strings", "written")

    def __init__(self, capacity: int = 0) -> None:
        self.kind = np.zeros(capacity, dtype=np.uint8)
        self.num = np.zeros(capacity, dtype=np.float64)
        self.code = np.zeros(capacity, dtype=np.int32)
        # Event time of the value, so a late event never overwrites a newer one.
        self.written = np.full(capacity, np.iinfo(np.int64).min, dtype=np.int64)
        self.strings = StringDictionary()
        self.other: dict[int, Any] = {}

    def resize(self, capacity: int) -> None:
        """Make room for rows below ``capacity``."""
        if capacity <= len(self.kind):
            return
        capacity = max(capacity, 2 * len(self.kind), 1024)
        self.kind = grow(self.kind, capacity)
        self.num = grow(self.num, capacity)
        self.code = grow(self.code, capacity)
        self.written = grow(self.written, capacity, np.iinfo(np.int64).min)

    def set(self, row: int, value: Any) -> None:
        """Store ``value`` (None clears) at ``row``."""
        kind, x = classify(value)
        if self.kind[row] == OTHER:
            del self.other[row]
        self.kind[row] = kind
        if kind == STR:
            self.code[row] = self.strings.code(value)
        elif kind == OTHER:
            self.other[row] = value
        else:
            self.num[row] = x

    def set_many(self, rows: RowArray, values: list[Any]) -> None:
        """Store ``values`` at distinct ``rows`` (None clears)."""
        kinds: list[int] = []
        nums: list[float] = []
        codes: list[int] = []
        others: list[tuple[int, Any]] = []
        code_of = self.strings.code
        for position, value in enumerate(values):
            cls = value.__class__
            if cls is str:
                kinds.append(STR)
                nums.append(0.0)
                codes.append(code_of(value))
                continue
            kind, x = classify(value)
            kinds.append(kind)
            nums.append(x)
            codes.append(0)
            if kind == OTHER:
                others.append((position, value))
        if self.other:
            for row in rows[self.kind[rows] == OTHER].tolist():
                del self.other[row]
        self.kind[rows] = kinds
        self.num[rows] = nums
        self.code[rows] = codes
        for position, value in others:
            self.other[int(rows[position])] = value

    def get(self, row: int) -> Any:
        """The Python value at ``row`` (None when missing)."""
        if row >= len(self.kind) or self.kind[row] == MISSING:
            return None
        return self.gather(np.array([row], dtype=np.int64)).value(0)

    def clear(self, row: int) -> None:
        """Forget the value and its write time."""
        if row < len(self.kind):
            self.set(row, None)
            self.written[row] = np.iinfo(np.int64).min

    def present(self) -> RowArray:
        """Rows holding a value."""
        return np.flatnonzero(self.kind != MISSING).astype(np.int64)

    def gather(self, rows: RowArray) -> ValueVector:
        """The values of ``rows`` as a vector (rows beyond the column are missing)."""
        n = len(self.kind)
        if len(rows) and int(rows.max()) >= n:
            self.resize(int(rows.max()) + 1)
        kind = self.kind[rows]
        other: dict[int, Any] = {}
        if self.other:
            for position in np.flatnonzero(kind == OTHER).tolist():
                other[position] = self.other[int(rows[position])]
        return ValueVector(kind, self.num[rows], self.code[rows], self.strings, other)

    def nbytes(self) -> int:
        """Bytes held by the arrays (the side dict excluded)."""
        return int(self.kind.nbytes + self.num.nbytes + self.code.nbytes + self.written.nbytes)
