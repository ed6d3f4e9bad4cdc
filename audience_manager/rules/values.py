"""Typed value vectors: the columnar form that compiled rules evaluate over.

A profile attribute (or an event property) for a set of rows is a :class:`ValueVector`:
a kind per row, a float64 for numbers, booleans and times, a code into a shared
:class:`StringDictionary` for strings, and the Python object for everything else (lists,
objects, integers too large for a float64). Operators run as numpy expressions over the
kinds they apply to and fall back to the scalar semantics for ``OTHER`` rows only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

__all__ = [
    "BOOL",
    "MISSING",
    "NUM",
    "OTHER",
    "STR",
    "TIME",
    "BoolArray",
    "StringDictionary",
    "ValueVector",
    "classify",
    "family",
    "strict_equal",
]

BoolArray = npt.NDArray[np.bool_]

MISSING: Final = 0
NUM: Final = 1
BOOL: Final = 2
STR: Final = 3
TIME: Final = 4
OTHER: Final = 5

# Integers beyond this do not survive a float64 round trip; they are kept as objects.
_EXACT_INT: Final = 2**53


def classify(value: Any) -> tuple[int, float]:
    """The kind of a JSON value and its float64 payload (0.0 where unused)."""
    if value is None:
        return MISSING, 0.0
    if value is True or value is False:
        return BOOL, 1.0 if value else 0.0
    if isinstance(value, int):
        if -_EXACT_INT <= value <= _EXACT_INT:
            return NUM, float(value)
        return OTHER, 0.0
    if isinstance(value, float):
        return NUM, value
    if isinstance(value, str):
        return STR, 0.0
    return OTHER, 0.0


def family(value: Any) -> str | None:
    """The JSON type family of a value: string, number, bool, list, object (None if null)."""
    if value is None:
        return None
    if value is True or value is False:
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return None


def strict_equal(a: Any, b: Any) -> bool:
    """JSON equality without coercion: booleans are not numbers, ``"1"`` is not ``1``.

    A ``null`` inside a list or object equals ``null`` (identical documents are equal); a
    missing attribute never reaches here, operators are false on it first.
    """
    if a is None or b is None:
        return a is None and b is None
    fa, fb = family(a), family(b)
    if fa is None or fa != fb:
        return False
    if fa == "list":
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if fa == "object":
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return bool(a == b)


class StringDictionary:
    """Distinct strings of one column, with per-predicate results cached by code.

    A string predicate (``starts_with``, ``matches``, ``gt`` on strings, ISO-8601 parsing)
    runs once per distinct string, not once per row; the cache grows with the dictionary.
    """

    __slots__ = ("_bool_cache", "_float_cache", "index", "strings")

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.index: dict[str, int] = {}
        self._bool_cache: dict[Hashable, BoolArray] = {}
        self._float_cache: dict[Hashable, npt.NDArray[np.float64]] = {}

    def __len__(self) -> int:
        return len(self.strings)

    def code(self, value: str) -> int:
        """The code of ``value``, assigning one if new."""
        code = self.index.get(value)
        if code is None:
            code = len(self.strings)
            self.index[value] = code
            self.strings.append(value)
        return code

    def codes(self, values: list[str | None]) -> npt.NDArray[np.int32]:
        """Codes of strings (assigning new ones), -1 for None; a tight loop over a dict."""
        index = self.index
        before = len(index)
        setdefault = index.setdefault
        # len(index) is read before the insert, so a new string gets the next code.
        codes = [-1 if v is None else setdefault(v, len(index)) for v in values]
        added = len(index) - before
        if added:
            self.strings.extend(list(itertools.islice(reversed(index), added))[::-1])
        return np.asarray(codes, dtype=np.int32)

    def mask(self, key: Hashable, predicate: Callable[[str], bool]) -> BoolArray:
        """``predicate`` over every distinct string, indexable by code."""
        cached = self._bool_cache.get(key)
        done = 0 if cached is None else len(cached)
        if done == len(self.strings) and cached is not None:
            return cached
        fresh = np.fromiter(
            (predicate(s) for s in self.strings[done:]), dtype=np.bool_, count=len(self) - done
        )
        result = fresh if cached is None else np.concatenate([cached, fresh])
        self._bool_cache[key] = result
        return result

    def floats(self, key: Hashable, convert: Callable[[str], float]) -> npt.NDArray[np.float64]:
        """``convert`` over every distinct string (NaN for "not applicable"), by code."""
        cached = self._float_cache.get(key)
        done = 0 if cached is None else len(cached)
        if done == len(self.strings) and cached is not None:
            return cached
        fresh = np.fromiter(
            (convert(s) for s in self.strings[done:]), dtype=np.float64, count=len(self) - done
        )
        result = fresh if cached is None else np.concatenate([cached, fresh])
        self._float_cache[key] = result
        return result


class ValueVector:
    """Values of one attribute for ``n`` rows, in columnar form.

    ``num`` holds numbers, booleans (0/1) and times (epoch ms); ``code`` indexes
    ``strings`` for ``STR`` rows; ``other`` maps a position to its object for ``OTHER``.
    """

    __slots__ = ("code", "kind", "num", "other", "strings")

    def __init__(
        self,
        kind: npt.NDArray[np.uint8],
        num: npt.NDArray[np.float64],
        code: npt.NDArray[np.int32],
        strings: StringDictionary,
        other: dict[int, Any],
    ) -> None:
        self.kind = kind
        self.num = num
        self.code = code
        self.strings = strings
        self.other = other

    def __len__(self) -> int:
        return len(self.kind)

    def value(self, i: int) -> Any:
        """The Python value at position ``i`` (None when missing; times as epoch ms)."""
        kind = int(self.kind[i])
        if kind == NUM:
            x = float(self.num[i])
            return int(x) if x.is_integer() and abs(x) <= _EXACT_INT else x
        if kind == BOOL:
            return bool(self.num[i])
        if kind == STR:
            return self.strings.strings[int(self.code[i])]
        if kind == TIME:
            return int(self.num[i])
        if kind == OTHER:
            return self.other[i]
        return None

    def values(self) -> list[Any]:
        """Every value as Python (None when missing), in bulk."""
        present = self.kind == NUM
        if not (present | (self.kind == MISSING)).all():
            return [self.value(i) for i in range(len(self))]
        num = self.num
        # Whole numbers that floats hold exactly read as ints, as ``value`` gives them.
        whole = present & np.isfinite(num) & (num == np.trunc(num)) & (np.abs(num) <= _EXACT_INT)
        if whole.all():
            return cast("list[Any]", num.astype(np.int64).tolist())
        out = num.astype(object)
        out[whole] = num[whole].astype(np.int64).tolist()
        out[~present] = None
        return cast("list[Any]", out.tolist())

    @classmethod
    def from_values(cls, values: list[Any], strings: StringDictionary | None = None) -> ValueVector:
        """Build a vector from Python values (None = missing)."""
        dictionary = strings if strings is not None else StringDictionary()
        classes = set(map(type, values))
        if classes <= _STRINGS:
            assigned = dictionary.codes(values)
            kind = np.where(assigned >= 0, np.uint8(STR), np.uint8(MISSING)).astype(np.uint8)
            return cls(kind, np.zeros(len(values)), np.maximum(assigned, 0), dictionary, {})
        if classes == _BOOLS:
            num = np.asarray(values, dtype=np.float64)
            kind = np.full(len(values), BOOL, dtype=np.uint8)
            return cls(kind, num, np.zeros(len(values), np.int32), dictionary, {})
        if classes <= _NUMBERS:
            num = np.asarray(values, dtype=np.float64)
            # Strictly below: 2**53 + 1 rounds to 2**53 and must take the exact path.
            if not len(num) or np.abs(num).max() < _EXACT_INT:
                kind = np.full(len(values), NUM, dtype=np.uint8)
                return cls(kind, num, np.zeros(len(values), np.int32), dictionary, {})
        code_of = dictionary.code
        kinds: list[int] = []
        nums: list[float] = []
        codes: list[int] = []
        other: dict[int, Any] = {}
        for i, value in enumerate(values):
            c = value.__class__
            if c is str:
                kinds.append(STR)
                nums.append(0.0)
                codes.append(code_of(value))
            elif c is float or (c is int and -_EXACT_INT <= value <= _EXACT_INT):
                kinds.append(NUM)
                nums.append(value)
                codes.append(0)
            else:
                k, x = classify(value)
                kinds.append(k)
                nums.append(x)
                codes.append(0)
                if k == OTHER:
                    other[i] = value
        return cls(
            np.asarray(kinds, dtype=np.uint8),
            np.asarray(nums, dtype=np.float64),
            np.asarray(codes, dtype=np.int32),
            dictionary,
            other,
        )

    @classmethod
    def numbers(cls, num: npt.NDArray[np.float64], present: BoolArray | None = None) -> ValueVector:
        """A vector of numbers; rows where ``present`` is False are missing."""
        kind = np.full(len(num), NUM, dtype=np.uint8)
        if present is not None:
            kind[~present] = MISSING
        return cls(
            kind,
            num,
            np.zeros(len(num), np.int32),
            _EMPTY_DICTIONARY,
            {},
        )

    @classmethod
    def times(cls, ms: npt.NDArray[np.float64], present: BoolArray) -> ValueVector:
        """A vector of instants (epoch ms); rows where ``present`` is False are missing."""
        kind = np.where(present, np.uint8(TIME), np.uint8(MISSING)).astype(np.uint8)
        return cls(kind, ms, np.zeros(len(ms), np.int32), _EMPTY_DICTIONARY, {})


_EMPTY_DICTIONARY: Final = StringDictionary()
_STRINGS: Final = frozenset({str, type(None)})
_NUMBERS: Final = frozenset({int, float})
_BOOLS: Final = frozenset({bool})
