"""Growable typed columns: one attribute for every user, in a few bytes per user.

A column keeps a kind byte per row, a float64 only once it has held a number and a string
code only once it has held a string; lists, objects and huge integers live in a side dict.
Every array defaults to zero, so the headroom of a grown array is never touched and costs
no resident memory.
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
)

__all__ = ["BitColumn", "Column", "RowArray", "distinct", "grow"]

RowArray = npt.NDArray[np.int64]
T = TypeVar("T", bound=np.generic)


def distinct(values: npt.NDArray[T]) -> npt.NDArray[T]:
    """The sorted distinct values of a 1-d integer array, as ``np.unique`` gives them:
    sorting and comparing neighbours is several times faster than its hashing."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=np.bool_)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def grow(array: npt.NDArray[T], capacity: int) -> npt.NDArray[T]:
    """``array`` with room for ``capacity`` rows (at least doubling), new rows zero."""
    if len(array) >= capacity:
        return array
    extended = np.zeros(max(capacity, 2 * len(array), 1024), dtype=array.dtype)
    extended[: len(array)] = array
    return extended


class Column:
    """Values of one attribute by row, with the event time each was written at.

    ``written`` holds the event time plus one (0: never written), so that a late event
    never overwrites a newer value.
    """

    __slots__ = ("_code", "_num", "kind", "other", "strings", "written")

    def __init__(self, capacity: int = 0) -> None:
        self.kind = np.zeros(capacity, dtype=np.uint8)
        self.written = np.zeros(capacity, dtype=np.int64)
        self._num: npt.NDArray[np.float64] | None = None
        self._code: npt.NDArray[np.int32] | None = None
        self.strings = StringDictionary()
        self.other: dict[int, Any] = {}

    @property
    def num(self) -> npt.NDArray[np.float64]:
        if self._num is None or len(self._num) < len(self.kind):
            self._num = grow(np.zeros(0) if self._num is None else self._num, len(self.kind))
        return self._num

    @property
    def code(self) -> npt.NDArray[np.int32]:
        if self._code is None or len(self._code) < len(self.kind):
            empty = np.zeros(0, dtype=np.int32)
            self._code = grow(empty if self._code is None else self._code, len(self.kind))
        return self._code

    def resize(self, capacity: int) -> None:
        """Make room for rows below ``capacity``."""
        if capacity > len(self.kind):
            self.kind = grow(self.kind, capacity)
            self.written = grow(self.written, len(self.kind))

    def set(self, row: int, value: Any) -> None:
        """Store ``value`` (None clears) at ``row``."""
        self.set_many(np.array([row], dtype=np.int64), [value])

    def set_many(self, rows: RowArray, values: list[Any]) -> None:
        """Store ``values`` at distinct ``rows`` (None clears)."""
        vector = ValueVector.from_values(values, self.strings)
        if self.other:
            for row in rows[self.kind[rows] == OTHER].tolist():
                del self.other[row]
        self.kind[rows] = vector.kind
        if self._num is not None or (vector.kind != STR).any():
            self.num[rows] = vector.num
        if self._code is not None or (vector.kind == STR).any():
            self.code[rows] = vector.code
        for position, value in vector.other.items():
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
            self.written[row] = 0

    def gather(self, rows: RowArray) -> ValueVector:
        """The values of ``rows`` as a vector."""
        if len(rows) and int(rows.max()) >= len(self.kind):
            self.resize(int(rows.max()) + 1)
        kind = self.kind[rows]
        other: dict[int, Any] = {}
        if self.other:
            for position in np.flatnonzero(kind == OTHER).tolist():
                other[position] = self.other[int(rows[position])]
        # The properties grow a lazily allocated array to the column's length.
        num = self.num[rows] if self._num is not None else np.zeros(len(rows))
        code = self.code[rows] if self._code is not None else np.zeros(len(rows), np.int32)
        return ValueVector(kind, num, code, self.strings, other)

    def nbytes(self) -> int:
        """Bytes held by the arrays (the side dict excluded)."""
        extra = sum(a.nbytes for a in (self._num, self._code) if a is not None)
        return int(self.kind.nbytes + self.written.nbytes + extra)


class BitColumn:
    """One bit per row: segment membership for fast vectorised reads and diffs."""

    __slots__ = ("bits",)

    def __init__(self) -> None:
        self.bits = np.zeros(0, dtype=np.uint8)

    def get(self, rows: RowArray) -> npt.NDArray[np.bool_]:
        """The bit of each row (rows beyond the column are 0)."""
        byte = rows >> 3
        inside = byte < len(self.bits)
        if not inside.all():
            out = np.zeros(len(rows), dtype=np.bool_)
            out[inside] = self.get(rows[inside])
            return out
        shifted = self.bits[byte] >> (rows & 7).astype(np.uint8)
        return np.asarray(shifted & 1, dtype=np.bool_)

    def set(self, rows: RowArray, value: bool) -> None:
        """Set (or clear) the bit of every row in ``rows``."""
        if len(rows) == 0:
            return
        self.bits = grow(self.bits, (int(rows.max()) >> 3) + 1)
        masks = (np.uint8(1) << (rows & 7).astype(np.uint8)).astype(np.uint8)
        if value:
            np.bitwise_or.at(self.bits, rows >> 3, masks)
        else:
            np.bitwise_and.at(self.bits, rows >> 3, ~masks)

    def rows(self) -> RowArray:
        """Rows whose bit is set."""
        return np.flatnonzero(np.unpackbits(self.bits, bitorder="little")).astype(np.int64)

    def nbytes(self) -> int:
        return int(self.bits.nbytes)
