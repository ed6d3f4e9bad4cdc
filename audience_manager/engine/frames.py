"""A batch of events' properties in columnar form, for ``where`` filters and aggregates."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from audience_manager.rules.predicates import Predicate
from audience_manager.rules.values import BoolArray, ValueVector

__all__ = ["EventFrame", "numbers", "property_values"]

_NUMBER_TYPES = {int, float}


def property_values(properties: list[dict[str, Any]], path: str) -> list[Any]:
    """The value at a dotted ``path`` of each properties object (None where absent)."""
    if "." not in path:
        return [p.get(path) for p in properties]
    parts = path.split(".")
    out: list[Any] = []
    for p in properties:
        value: Any = p
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                break
        out.append(value)
    return out


def numbers(values: list[Any]) -> tuple[npt.NDArray[np.float64], BoolArray]:
    """Numeric values as float64 with a mask of which were numbers (bools are not)."""
    if set(map(type, values)) <= _NUMBER_TYPES:  # the usual column: numbers alone
        return np.array(values, dtype=np.float64), np.ones(len(values), dtype=np.bool_)
    num = np.zeros(len(values), dtype=np.float64)
    ok = np.zeros(len(values), dtype=np.bool_)
    for i, value in enumerate(values):
        cls = value.__class__
        if cls is int or cls is float:
            num[i] = value
            ok[i] = True
    return num, ok


class EventFrame:
    """Properties of the events of one type in a batch, with per-path columns built once."""

    def __init__(self, properties: list[dict[str, Any]]) -> None:
        self.properties = properties
        self._values: dict[str, list[Any]] = {}
        self._vectors: dict[str, ValueVector] = {}
        self._numbers: dict[str, tuple[npt.NDArray[np.float64], BoolArray]] = {}

    def __len__(self) -> int:
        return len(self.properties)

    def values(self, path: str) -> list[Any]:
        """The property at ``path`` for every event (None where absent)."""
        values = self._values.get(path)
        if values is None:
            values = self._values[path] = property_values(self.properties, path)
        return values

    def vector(self, path: str) -> ValueVector:
        """The property at ``path`` for every event, as a typed vector."""
        vector = self._vectors.get(path)
        if vector is None:
            vector = self._vectors[path] = ValueVector.from_values(self.values(path))
        return vector

    def numbers(self, path: str) -> tuple[npt.NDArray[np.float64], BoolArray]:
        """The numeric values at ``path`` and which events have one."""
        found = self._numbers.get(path)
        if found is None:
            found = self._numbers[path] = numbers(self.values(path))
        return found

    def matches(self, where: list[tuple[str, Predicate]], now: int) -> BoolArray:
        """Which events satisfy every ``where`` condition."""
        result = np.ones(len(self), dtype=np.bool_)
        for path, predicate in where:
            result &= predicate.evaluate(self.vector(path), now)
        return result
