"""Attribute operators as vectorised predicates over a :class:`ValueVector`.

Each operator runs as numpy over the kinds it applies to; strings are tested once per
distinct string through the column's dictionary; only ``OTHER`` rows (lists, objects, huge
integers) fall back to the scalar semantics. ``docs/rules.md`` is the meaning of every case.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from audience_manager.rules.model import AttributeCondition, compile_pattern
from audience_manager.rules.timeparse import try_timestamp_ms
from audience_manager.rules.values import (
    BOOL,
    NUM,
    STR,
    TIME,
    BoolArray,
    ValueVector,
    family,
    strict_equal,
)

__all__ = ["Predicate", "scalar_time"]

FloatArray = npt.NDArray[np.float64]
NEVER: Final = math.inf
TIME_OPERATORS: Final = frozenset({"before", "after", "within_last"})


def _iso_ms(text: str) -> float:
    ms = try_timestamp_ms(text)
    return math.nan if ms is None else float(ms)


def scalar_time(value: Any) -> float | None:
    """A scalar value as an instant (ms), when it is an ISO-8601 string."""
    if isinstance(value, str):
        ms = try_timestamp_ms(value)
        return None if ms is None else float(ms)
    return None


def _number(value: Any) -> bool:
    return family(value) == "number"


class Predicate:
    """One attribute operator with its operand, evaluated over many rows at once."""

    __slots__ = (
        "_exact",
        "_key",
        "_scalar",
        "condition",
        "duration_ms",
        "instant_ms",
        "operator",
        "relative",
        "value",
    )

    def __init__(self, condition: AttributeCondition) -> None:
        self.condition = condition
        self.operator: str = condition.operator
        self.value: Any = condition.value
        self._key = _hashable(self.value)
        # Integers beyond float64 precision compare exactly in Python, not in numpy.
        self._exact = _has_big_int(self.value)
        self.duration_ms = condition.duration_ms
        self.instant_ms = condition.instant_ms
        # Results that depend on the clock change as time passes and need timers.
        self.relative = self.operator == "within_last" or (
            self.operator in ("before", "after") and self.duration_ms is not None
        )
        self._scalar = self._scalar_function()

    def __reduce__(self) -> tuple[type[Predicate], tuple[AttributeCondition]]:
        # The operator's functions are closures: rebuild them from the condition.
        return (Predicate, (self.condition,))

    # -- evaluation -------------------------------------------------------------------

    def evaluate(self, v: ValueVector, now: int) -> BoolArray:
        """Whether the operator holds for each row of ``v`` at time ``now``."""
        op = self.operator
        kind = v.kind
        if op == "exists":
            return _bools(kind != 0)
        if op == "not_exists":
            return _bools(kind == 0)
        if op in TIME_OPERATORS:
            return self._evaluate_time(v, now)
        result = self._evaluate_typed(v)
        if self._exact:
            numeric = np.flatnonzero(v.kind == NUM)
            result[numeric] = [self._scalar(_number_value(x)) for x in v.num[numeric].tolist()]
        if v.other:
            for position, obj in v.other.items():
                result[position] = self._scalar(obj)
        return result

    def evaluate_one(self, value: Any, now: int, is_time: bool = False) -> bool:
        """The operator on one Python value (``is_time``: an epoch-ms time attribute)."""
        op = self.operator
        if op == "exists":
            return value is not None
        if op == "not_exists":
            return value is None
        if op in TIME_OPERATORS:
            t = float(value) if is_time and value is not None else scalar_time(value)
            return t is not None and self._time_holds(t, now)
        if value is None or is_time:
            return False
        return self._scalar(value)

    def next_change(self, v: ValueVector, now: int) -> FloatArray:
        """For relative operators: the earliest instant after ``now`` where a row may flip."""
        t = self._times(v)
        due = np.full(len(v), NEVER)
        d = float(self.duration_ms or 0)
        with np.errstate(invalid="ignore"):
            if self.operator == "within_last":
                due = np.where(t > now, t, np.where(t + d >= now, t + d + 1, NEVER))
            elif self.operator == "before":
                due = np.where(t + d >= now, t + d + 1, NEVER)
            elif self.operator == "after":
                due = np.where(t + d > now, t + d, NEVER)
        due[np.isnan(t)] = NEVER
        return due

    # -- time operators ---------------------------------------------------------------

    def _times(self, v: ValueVector) -> FloatArray:
        t = np.where(v.kind == TIME, v.num, np.nan)
        strings = v.kind == STR
        if strings.any():
            parsed = v.strings.floats("iso", _iso_ms)
            t[strings] = parsed[v.code[strings]]
        return t

    def _evaluate_time(self, v: ValueVector, now: int) -> BoolArray:
        t = self._times(v)
        with np.errstate(invalid="ignore"):
            if self.operator == "within_last":
                lo = now - (self.duration_ms or 0)
                return (t >= lo) & (t <= now)
            bound = self._bound(now)
            if self.operator == "before":
                return t < bound
            return t > bound

    def _bound(self, now: int) -> float:
        if self.duration_ms is not None:
            return float(now - self.duration_ms)
        return float(self.instant_ms or 0)

    def _time_holds(self, t: float, now: int) -> bool:
        if self.operator == "within_last":
            return now - (self.duration_ms or 0) <= t <= now
        if self.operator == "before":
            return t < self._bound(now)
        return t > self._bound(now)

    # -- typed operators --------------------------------------------------------------

    def _strings(self, v: ValueVector, key: str, test: Callable[[str], bool]) -> BoolArray:
        is_str = v.kind == STR
        out = np.zeros(len(v), dtype=np.bool_)
        if is_str.any():
            mask = v.strings.mask((key, self.operator, self._key), test)
            out[is_str] = mask[v.code[is_str]]
        return out

    def _evaluate_typed(self, v: ValueVector) -> BoolArray:
        op, x, kind, num = self.operator, self.value, v.kind, v.num
        fam = family(x)
        if op in ("eq", "neq"):
            if fam == "number":
                return _bools((kind == NUM) & ((num == x) if op == "eq" else (num != x)))
            if fam == "bool":
                flag = float(x)
                return _bools((kind == BOOL) & ((num == flag) if op == "eq" else (num != flag)))
            if fam == "string":
                test = (lambda s: s == x) if op == "eq" else (lambda s: s != x)
                return self._strings(v, "s", test)
            return np.zeros(len(v), dtype=np.bool_)  # lists and objects: OTHER rows only
        if op in ("gt", "gte", "lt", "lte"):
            compare = _COMPARE[op]
            if fam == "number":
                return _bools((kind == NUM) & compare(num, x))
            return self._strings(v, "s", lambda s: bool(compare(s, x)))
        if op == "between":
            lo, hi = x
            return _bools((kind == NUM) & (num >= lo) & (num <= hi))
        if op in ("in", "not_in"):
            return self._membership(v)
        if op in ("contains", "not_contains"):
            if fam != "string":
                return np.zeros(len(v), dtype=np.bool_)
            if op == "contains":
                return self._strings(v, "s", lambda s: x in s)
            return self._strings(v, "s", lambda s: x not in s)
        if op == "starts_with":
            return self._strings(v, "s", lambda s: s.startswith(x))
        if op == "ends_with":
            return self._strings(v, "s", lambda s: s.endswith(x))
        if op == "matches":
            pattern = compile_pattern(x)
            return self._strings(v, "s", lambda s: pattern.search(s) is not None)
        raise ValueError(f"unknown operator {op!r}")

    def _membership(self, v: ValueVector) -> BoolArray:
        items = self.value
        numbers = [i for i in items if _number(i)]
        bools = [float(i) for i in items if family(i) == "bool"]
        strings = {i for i in items if isinstance(i, str)}
        positive = self.operator == "in"
        kind, num = v.kind, v.num
        out = np.zeros(len(v), dtype=np.bool_)
        if numbers:
            hit = np.isin(num, np.asarray(numbers, dtype=np.float64))
            out |= (kind == NUM) & (hit if positive else ~hit)
        if bools:
            hit = np.isin(num, np.asarray(bools, dtype=np.float64))
            out |= (kind == BOOL) & (hit if positive else ~hit)
        if strings:
            key = frozenset(strings)
            out |= self._strings(
                v, "in", (lambda s: s in key) if positive else (lambda s: s not in key)
            )
        return out

    def _scalar_function(self) -> Callable[[Any], bool]:
        """The operator on one non-missing, non-time value (lists, objects, big ints)."""
        op, x = self.operator, self.value
        if op == "eq":
            return lambda a: strict_equal(a, x)
        if op == "neq":
            return lambda a: family(a) == family(x) and not strict_equal(a, x)
        if op in ("gt", "gte", "lt", "lte"):
            compare = _COMPARE[op]
            fam = family(x)
            return lambda a: family(a) == fam and bool(compare(a, x))
        if op == "between":
            return lambda a: _number(a) and x[0] <= a <= x[1]
        if op == "in":
            return lambda a: any(strict_equal(a, i) for i in x)
        if op == "not_in":
            return lambda a: (
                any(family(i) == family(a) for i in x) and not any(strict_equal(a, i) for i in x)
            )
        if op == "contains":
            return lambda a: _contains(a, x)
        if op == "not_contains":
            return lambda a: _not_contains(a, x)
        if op == "starts_with":
            return lambda a: isinstance(a, str) and a.startswith(x)
        if op == "ends_with":
            return lambda a: isinstance(a, str) and a.endswith(x)
        if op == "matches":
            pattern = compile_pattern(x)
            return lambda a: isinstance(a, str) and pattern.search(a) is not None
        return lambda a: False


def _has_big_int(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_big_int(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53


def _number_value(x: float) -> int | float:
    return int(x) if x.is_integer() else x


def _bools(array: Any) -> BoolArray:
    return np.asarray(array, dtype=np.bool_)


def _contains(a: Any, x: Any) -> bool:
    if isinstance(a, str):
        return isinstance(x, str) and x in a
    if isinstance(a, list):
        return any(strict_equal(e, x) for e in a)
    return False


def _not_contains(a: Any, x: Any) -> bool:
    if isinstance(a, str):
        return isinstance(x, str) and x not in a
    if isinstance(a, list):
        return not any(strict_equal(e, x) for e in a)
    return False


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return (type(value).__name__, value)


_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}
