"""Per-user aggregates of events: counts, exact sums, min/max, first/last, distinct counts.

Sums are kept as whole numbers of millionths in float64 (exact up to 2**53 millionths), so
adding and, for windows, subtracting never drifts and the result never depends on the order
events arrived in. Windows keep event-time buckets of ``max(1 s, window / 100)``: counts and
sums subtract an expired bucket; min, max, first, last and distinct counts keep per-user
bucket partials and recompute from the live ones.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt

from audience_manager.engine.columns import Column, RowArray, distinct, grow
from audience_manager.engine.frames import EventFrame
from audience_manager.rules.compiler import AggregateSpec, compile_where
from audience_manager.rules.values import ValueVector

__all__ = ["SCALE", "Aggregate", "bucket_width", "create_aggregate"]

SCALE = 1_000_000.0
IntArray = npt.NDArray[np.int64]
_EMPTY = np.zeros(0, dtype=np.int64)
_NO_AMOUNTS = np.zeros(0, dtype=np.float64)


def bucket_width(window_ms: int) -> int:
    """Bucket width of a window: 1% of it, at least one second."""
    return max(1000, window_ms // 100)


class Aggregate(ABC):
    """One aggregate for every user, fed with the matching events of each batch."""

    def __init__(self, spec: AggregateSpec) -> None:
        self.spec = spec
        self.where = compile_where(spec.where)
        self.capacity = 0

    def accepts(self, event_type: str) -> bool:
        """Whether events of this type feed the aggregate."""
        return self.spec.event_type in ("*", event_type)

    def feed(
        self, rows: IntArray, frame: EventFrame, ts: IntArray, seq: IntArray, now: int
    ) -> RowArray:
        """Apply matching events (in arrival order); return the rows whose value changed."""
        index = None
        if self.where:
            keep = frame.matches(self.where, now)
            if not keep.all():
                index = np.flatnonzero(keep)
                rows, ts, seq = rows[index], ts[index], seq[index]
        if len(rows) == 0:
            return _EMPTY
        return self.update(rows, _Picked(frame, index), ts, seq, now)

    @abstractmethod
    def update(
        self, rows: IntArray, picked: _Picked, ts: IntArray, seq: IntArray, now: int
    ) -> RowArray: ...

    @abstractmethod
    def vector(self, rows: RowArray) -> ValueVector:
        """The aggregate's value for ``rows``."""

    @abstractmethod
    def resize(self, capacity: int) -> None: ...

    @abstractmethod
    def clear(self, row: int) -> None:
        """Forget everything about ``row`` (the user was erased)."""

    def expire(self, now: int) -> RowArray:
        """Drop what has left the window by ``now``; return the rows whose value changed."""
        return _EMPTY

    def _values(self, picked: _Picked) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        assert self.spec.property is not None
        num, ok = picked.frame.numbers(self.spec.property)
        if picked.index is None:
            return num, ok
        return num[picked.index], ok[picked.index]


class _Picked:
    """The events of a frame that passed an aggregate's ``where`` (all when index is None)."""

    __slots__ = ("frame", "index")

    def __init__(self, frame: EventFrame, index: IntArray | None) -> None:
        self.frame = frame
        self.index = index

    def values(self, path: str) -> list[Any]:
        values = self.frame.values(path)
        if self.index is None:
            return values
        return [values[i] for i in self.index.tolist()]


class _Totals(Aggregate):
    """count, sum and avg: invertible running totals, optionally over a window.

    Only what the aggregate needs is stored: a count (int32) for count and avg, a total in
    millionths (float64) for sum and avg.
    """

    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.kind = spec.aggregate
        self.counts = self.kind != "sum"
        self.sums = self.kind != "count"
        self.count = np.zeros(0, dtype=np.int32)
        self.total = np.zeros(0, dtype=np.float64)
        self.window = spec.within_ms or 0
        self.width = bucket_width(self.window) if self.window else 0
        self.buckets: dict[int, list[tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]]]] = {}
        self.heap: list[int] = []
        self.erased: set[int] = set()

    def resize(self, capacity: int) -> None:
        if self.counts:
            self.count = grow(self.count, capacity)
        if self.sums:
            self.total = grow(self.total, capacity)
        self.capacity = capacity

    def update(
        self, rows: IntArray, picked: _Picked, ts: IntArray, seq: IntArray, now: int
    ) -> RowArray:
        if self.sums:
            num, ok = self._values(picked)
            rows, ts, amounts = rows[ok], ts[ok], np.round(num[ok] * SCALE)
        else:
            amounts = _NO_AMOUNTS
        if self.window:
            bucket = ts // self.width
            live = (bucket + 1) * self.width + self.window > now
            if not live.all():
                rows, bucket = rows[live], bucket[live]
                amounts = amounts[live] if self.sums else amounts
            self._enqueue(rows, amounts, bucket)
        if self.counts:
            np.add.at(self.count, rows, 1)
        if self.sums:
            np.add.at(self.total, rows, amounts)
        return distinct(rows)

    def _enqueue(self, rows: IntArray, amounts: npt.NDArray[np.float64], bucket: IntArray) -> None:
        first = int(bucket[0]) if len(bucket) else 0
        buckets = [first] if len(bucket) and (bucket == first).all() else distinct(bucket).tolist()
        for b in buckets:
            if len(buckets) == 1:
                part_rows, part_amounts = rows, amounts
            else:
                mask = bucket == b
                part_rows, part_amounts = rows[mask], amounts[mask] if self.sums else amounts
            entries = self.buckets.get(b)
            if entries is None:
                entries = self.buckets[b] = []
                heapq.heappush(self.heap, b)
            entries.append((part_rows.astype(np.int32), part_amounts))

    def expire(self, now: int) -> RowArray:
        if not self.window:
            return _EMPTY
        touched: list[IntArray] = []
        while self.heap and (self.heap[0] + 1) * self.width + self.window <= now:
            for rows32, amounts in self.buckets.pop(heapq.heappop(self.heap)):
                rows = rows32.astype(np.int64)
                if self.erased:
                    keep = ~np.isin(rows, np.fromiter(self.erased, dtype=np.int64))
                    rows, amounts = rows[keep], amounts[keep] if self.sums else amounts
                if self.counts:
                    np.subtract.at(self.count, rows, 1)
                if self.sums:
                    np.subtract.at(self.total, rows, amounts)
                touched.append(rows)
        return distinct(np.concatenate(touched)) if touched else _EMPTY

    def vector(self, rows: RowArray) -> ValueVector:
        if self.kind == "count":
            return ValueVector.numbers(self.count[rows].astype(np.float64))
        total = self.total[rows]
        if self.kind == "sum":
            return ValueVector.numbers(total / SCALE)
        count = self.count[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            return ValueVector.numbers(total / (count * SCALE), count > 0)

    def clear(self, row: int) -> None:
        if row < len(self.count):
            self.count[row] = 0
        if row < len(self.total):
            self.total[row] = 0.0
        if self.window:
            self.erased.add(row)


class _Extremes(Aggregate):
    """min and max, optionally over a window.

    Without a window the value only ever folds in new events. With one, each bucket keeps
    its (row, value) pairs; when a bucket expires, the rows it touched are recomputed from
    the buckets still live.
    """

    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.value = np.zeros(0, dtype=np.float64)
        self.present = np.zeros(0, dtype=np.bool_)
        self.ufunc = np.minimum if spec.aggregate == "min" else np.maximum
        self.window = spec.within_ms or 0
        self.width = bucket_width(self.window) if self.window else 0
        self.buckets: dict[int, list[tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]]]] = {}
        self.heap: list[int] = []

    def resize(self, capacity: int) -> None:
        self.value = grow(self.value, capacity)
        self.present = grow(self.present, capacity)
        self.capacity = capacity

    def update(
        self, rows: IntArray, picked: _Picked, ts: IntArray, seq: IntArray, now: int
    ) -> RowArray:
        num, ok = self._values(picked)
        rows, num, ts = rows[ok], num[ok], ts[ok]
        if self.window:
            bucket = ts // self.width
            live = (bucket + 1) * self.width + self.window > now
            rows, num, bucket = rows[live], num[live], bucket[live]
            for b in distinct(bucket).tolist():
                mask = bucket == b
                entries = self.buckets.get(b)
                if entries is None:
                    entries = self.buckets[b] = []
                    heapq.heappush(self.heap, b)
                entries.append((rows[mask].astype(np.int32), num[mask]))
        self._fold(rows, num)
        return distinct(rows)

    def _fold(self, rows: IntArray, num: npt.NDArray[np.float64]) -> None:
        fresh = ~self.present[rows]
        if fresh.any():
            # A user's first value replaces the zero placeholder.
            first = np.unique(rows[fresh], return_index=True)[1]
            self.value[rows[fresh][first]] = num[fresh][first]
            self.present[rows[fresh]] = True
        self.ufunc.at(self.value, rows, num)

    def expire(self, now: int) -> RowArray:
        if not self.window:
            return _EMPTY
        gone: list[npt.NDArray[np.int32]] = []
        while self.heap and (self.heap[0] + 1) * self.width + self.window <= now:
            gone.extend(rows for rows, _ in self.buckets.pop(heapq.heappop(self.heap)))
        if not gone:
            return _EMPTY
        touched = distinct(np.concatenate(gone)).astype(np.int64)
        self.value[touched] = 0.0
        self.present[touched] = False
        for b in sorted(self.buckets):
            for rows32, num in self.buckets[b]:
                mask = np.isin(rows32, touched)
                if mask.any():
                    self._fold(rows32[mask].astype(np.int64), num[mask])
        return touched

    def vector(self, rows: RowArray) -> ValueVector:
        return ValueVector.numbers(self.value[rows], self.present[rows])

    def clear(self, row: int) -> None:
        if row < len(self.value):
            self.value[row] = 0.0
            self.present[row] = False
        for entries in self.buckets.values():
            for index, (rows32, num) in enumerate(entries):
                if (rows32 == row).any():
                    keep = rows32 != row
                    entries[index] = (rows32[keep], num[keep])


class _Partials(Aggregate):
    """Aggregates kept as per-user partials: first, last and distinct_count.

    Without a window every event folds into one partial per user; with one, each bucket
    has its partial and the value is recomputed from the live buckets.
    """

    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.kind = spec.aggregate
        self.window = spec.within_ms or 0
        self.width = bucket_width(self.window) if self.window else 0
        self.partials: dict[int, dict[int, Any]] = {}
        self.result = Column()
        self.buckets: dict[int, set[int]] = {}
        self.heap: list[int] = []

    def resize(self, capacity: int) -> None:
        self.result.resize(capacity)
        self.capacity = capacity

    def update(
        self, rows: IntArray, picked: _Picked, ts: IntArray, seq: IntArray, now: int
    ) -> RowArray:
        assert self.spec.property is not None
        values = picked.values(self.spec.property)
        touched: set[int] = set()
        for row, value, t, s in zip(rows.tolist(), values, ts.tolist(), seq.tolist(), strict=True):
            partial = _partial(self.kind, value, t, s)
            if partial is None:
                continue
            bucket = 0
            if self.window:
                bucket = t // self.width
                if (bucket + 1) * self.width + self.window <= now:
                    continue
                members = self.buckets.get(bucket)
                if members is None:
                    members = self.buckets[bucket] = set()
                    heapq.heappush(self.heap, bucket)
                members.add(row)
            slots = self.partials.setdefault(row, {})
            slots[bucket] = _merge(self.kind, slots.get(bucket), partial)
            touched.add(row)
        for row in touched:
            self._recompute(row)
        return np.fromiter(sorted(touched), dtype=np.int64, count=len(touched))

    def expire(self, now: int) -> RowArray:
        touched: set[int] = set()
        while self.heap and (self.heap[0] + 1) * self.width + self.window <= now:
            bucket = heapq.heappop(self.heap)
            for row in self.buckets.pop(bucket):
                slots = self.partials.get(row)
                if slots is not None and slots.pop(bucket, None) is not None:
                    touched.add(row)
        for row in touched:
            self._recompute(row)
        return np.fromiter(sorted(touched), dtype=np.int64, count=len(touched))

    def _recompute(self, row: int) -> None:
        slots = self.partials.get(row)
        live = list(slots.values()) if slots else []
        if not live:
            self.partials.pop(row, None)
            self.result.set(row, 0 if self.kind == "distinct_count" else None)
            return
        combined = live[0]
        for partial in live[1:]:
            combined = _merge(self.kind, combined, partial)
        self.result.set(row, _final(self.kind, combined))

    def vector(self, rows: RowArray) -> ValueVector:
        vector = self.result.gather(rows)
        if self.kind == "distinct_count":
            vector.kind[vector.kind == 0] = 1  # no events: 0, present
        return vector

    def clear(self, row: int) -> None:
        self.partials.pop(row, None)
        self.result.clear(row)


def _partial(kind: str, value: Any, t: int, seq: int) -> Any:
    """One event's contribution, or None when it has no usable value."""
    if value is None:
        return None
    if kind == "distinct_count":
        return {_distinct_key(value)}
    return (t, seq, value)  # first / last


def _merge(kind: str, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if kind == "distinct_count":
        return a | b
    if kind == "first":
        return a if (a[0], a[1]) <= (b[0], b[1]) else b
    return a if (a[0], a[1]) >= (b[0], b[1]) else b  # last


def _final(kind: str, partial: Any) -> Any:
    return len(partial) if kind == "distinct_count" else partial[2]  # first / last


def _distinct_key(value: Any) -> Any:
    """A hashable key under which strictly-equal JSON values coincide."""
    if value is True or value is False:
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(_distinct_key(v) for v in value))
    if isinstance(value, dict):
        return ("o", tuple(sorted((k, _distinct_key(v)) for k, v in value.items())))
    return ("x", repr(value))


def create_aggregate(spec: AggregateSpec) -> Aggregate:
    """The implementation that keeps ``spec``."""
    if spec.aggregate in ("count", "sum", "avg"):
        return _Totals(spec)
    if spec.aggregate in ("min", "max"):
        return _Extremes(spec)
    return _Partials(spec)
