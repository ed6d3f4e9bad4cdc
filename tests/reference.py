"""A plain reference interpreter of the rule language (``docs/rules.md``).

It keeps every event it is given and evaluates rules from scratch at a given instant, with
no incremental state, no vectors and nothing shared with the engine but the rule models.
Tests hold the engine to it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import re2

from audience_manager.rules.attributes import BUILTIN_ATTRIBUTES, ComputedAttribute
from audience_manager.rules.model import (
    AttributeCondition,
    EventCondition,
    Group,
    Not,
    SegmentReference,
)

__all__ = [
    "AppliedEvent",
    "Instant",
    "ReferenceModel",
    "ReferenceSegment",
    "attribute_holds",
    "family",
    "iso_to_ms",
    "strict_equal",
    "window_end",
]

TIME_FIELDS = ("firstSeen", "lastSeen")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_ISO_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MISSING: Any = None


@dataclass(frozen=True)
class Instant:
    """The value of a time attribute (``firstSeen``, ``lastSeen``): epoch milliseconds."""

    ms: int


@dataclass(frozen=True)
class AppliedEvent:
    """An event as applied: ``arrival`` is its position, ``applied_at`` the engine time."""

    user_id: str
    event_type: str
    timestamp: int
    properties: dict[str, Any]
    traits: dict[str, Any] | None
    arrival: int
    applied_at: int


@dataclass(frozen=True)
class ReferenceSegment:
    id: str
    name: str
    rules: Group


# -- values ------------------------------------------------------------------------------


def family(value: object) -> str | None:
    """The JSON family of a value; ``None`` for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


def is_number(value: object) -> bool:
    return family(value) == "number"


def strict_equal(a: object, b: object) -> bool:
    """Same family and equal value; lists item by item, objects key by key."""
    fa, fb = family(a), family(b)
    if fa != fb:
        return False
    if fa == "list":
        assert isinstance(a, list | tuple)
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if fa == "object":
        assert isinstance(a, dict)
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return a == b


def strict_key(value: object) -> object:
    """A hashable key such that two values have equal keys iff they are strictly equal."""
    kind = family(value)
    if kind == "list":
        assert isinstance(value, list | tuple)
        return ("list", tuple(strict_key(v) for v in value))
    if kind == "object":
        assert isinstance(value, dict)
        return ("object", frozenset((k, strict_key(v)) for k, v in value.items()))
    return (kind, value)


def iso_to_ms(value: object) -> int | None:
    """Epoch ms of an ISO-8601 string (date alone: midnight UTC; no zone: UTC), else None."""
    if not isinstance(value, str) or _ISO_PREFIX.match(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


def duration_ms(value: str) -> int | None:
    match = _DURATION.fullmatch(value)
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def time_of(value: object) -> int | None:
    if isinstance(value, Instant):
        return value.ms
    return iso_to_ms(value)


def descend(value: object, parts: Iterable[str]) -> object:
    """Follow a dotted path; a path through anything but an object is missing."""
    for part in parts:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(part)
    return value


def window_end(timestamp: int, window_ms: int) -> int:
    """The first instant at which an event at ``timestamp`` no longer counts."""
    width = max(1000, window_ms // 100)
    return (timestamp // width + 1) * width + window_ms


# -- operators ---------------------------------------------------------------------------


def attribute_holds(operator: str, x: object, value: Any, now: int) -> bool:
    """Whether ``operator`` with ``value`` holds for the attribute value ``x`` at ``now``."""
    if operator == "exists":
        return x is not None
    if operator == "not_exists":
        return x is None
    if x is None:
        return False
    if operator in ("before", "after", "within_last"):
        return _time_holds(operator, time_of(x), value, now)
    if isinstance(x, Instant):
        return False  # rules using other operators on time attributes are rejected
    if operator == "eq":
        return strict_equal(x, value)
    if operator == "neq":
        return family(x) == family(value) and not strict_equal(x, value)
    if operator in ("gt", "gte", "lt", "lte"):
        comparable = (is_number(x) and is_number(value)) or (
            isinstance(x, str) and isinstance(value, str)
        )
        if not comparable:
            return False
        return {
            "gt": x > value,  # type: ignore[operator]
            "gte": x >= value,  # type: ignore[operator]
            "lt": x < value,  # type: ignore[operator]
            "lte": x <= value,  # type: ignore[operator]
        }[operator]
    if operator == "between":
        low, high = value
        return is_number(x) and low <= x <= high  # type: ignore[operator]
    if operator == "in":
        return any(strict_equal(item, x) for item in value)
    if operator == "not_in":
        same_family = any(family(item) == family(x) for item in value)
        return same_family and not any(strict_equal(item, x) for item in value)
    if operator in ("contains", "not_contains"):
        if isinstance(x, str):
            if not isinstance(value, str):
                return False
            found = value in x
        elif isinstance(x, list):
            found = any(strict_equal(item, value) for item in x)
        else:
            return False
        return found if operator == "contains" else not found
    if operator == "starts_with":
        return isinstance(x, str) and isinstance(value, str) and x.startswith(value)
    if operator == "ends_with":
        return isinstance(x, str) and isinstance(value, str) and x.endswith(value)
    if operator == "matches":
        return isinstance(x, str) and re2.search(value, x) is not None
    raise ValueError(f"unknown operator {operator}")


def _time_holds(operator: str, x: int | None, value: str, now: int) -> bool:
    if x is None:
        return False
    duration = duration_ms(value)
    if operator == "within_last":
        assert duration is not None
        return now - duration <= x <= now
    bound = now - duration if duration is not None else iso_to_ms(value)
    assert bound is not None
    return x < bound if operator == "before" else x > bound


# -- the model ---------------------------------------------------------------------------


@dataclass
class ReferenceModel:
    """Every event applied, in arrival order, and the segment definitions."""

    attributes: dict[str, ComputedAttribute] = field(default_factory=dict)
    segments: list[ReferenceSegment] = field(default_factory=list)
    events: list[AppliedEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.attributes = {**BUILTIN_ATTRIBUTES, **self.attributes}

    @classmethod
    def create(cls, attributes: Iterable[ComputedAttribute] = ()) -> ReferenceModel:
        return cls(attributes={a.name: a for a in attributes})

    # -- input ---------------------------------------------------------------------------

    def apply(self, events: Iterable[Mapping[str, Any]], applied_at: int) -> None:
        """Record events (dicts with the keys of the engine's ``Event``) applied at a time."""
        for event in events:
            self.events.append(
                AppliedEvent(
                    user_id=event["user_id"],
                    event_type=event["event_type"],
                    timestamp=event["timestamp"],
                    properties=event.get("properties") or {},
                    traits=event.get("traits"),
                    arrival=len(self.events),
                    applied_at=applied_at,
                )
            )

    def add_segment(self, segment_id: str, name: str, rules: Group) -> None:
        self.segments = [s for s in self.segments if s.id != segment_id]
        self.segments.append(ReferenceSegment(segment_id, name, rules))

    # -- output --------------------------------------------------------------------------

    def users(self) -> set[str]:
        return {e.user_id for e in self.events}

    def members(self, segment: str, now: int) -> set[str]:
        """Users for whom the segment's rules hold at ``now``."""
        return {u for u in sorted(self.users()) if _Evaluation(self, u, now).segment(segment)}

    def holds(self, user_id: str, segment: str, now: int) -> bool:
        return _Evaluation(self, user_id, now).segment(segment)

    def profile(self, user_id: str, now: int) -> dict[str, Any] | None:
        """Traits, attributes (``None`` when missing), first/last seen (ms) and segments."""
        if user_id not in self.users():
            return None
        evaluation = _Evaluation(self, user_id, now)
        return {
            "userId": user_id,
            "traits": evaluation.traits,
            "attributes": {name: evaluation.attribute(name) for name in self.attributes},
            "firstSeen": min(e.timestamp for e in evaluation.events),
            "lastSeen": max(e.timestamp for e in evaluation.events),
            "segments": sorted(s.id for s in self.segments if evaluation.segment(s.id)),
        }

    def segment_by_reference(self, reference: str) -> ReferenceSegment:
        for segment in self.segments:
            if segment.id == reference:
                return segment
        for segment in self.segments:
            if segment.name == reference:
                return segment
        raise KeyError(reference)


class _Evaluation:
    """One user at one instant."""

    def __init__(self, model: ReferenceModel, user_id: str, now: int) -> None:
        self.model = model
        self.now = now
        self.events = [e for e in model.events if e.user_id == user_id]
        self.traits = self._merge_traits()
        self._segments: dict[str, bool] = {}

    def _merge_traits(self) -> dict[str, Any]:
        latest: dict[str, tuple[int, int, Any]] = {}
        for event in self.events:
            for key, value in (event.traits or {}).items():
                stamp = (event.timestamp, event.arrival)
                if key not in latest or stamp > latest[key][:2]:
                    latest[key] = (*stamp, value)
        return {k: v for k, (_, _, v) in latest.items() if v is not None}

    # -- fields ------------------------------------------------------------------------

    def field(self, name: str) -> object:
        if name in TIME_FIELDS:
            stamps = [e.timestamp for e in self.events]
            if not stamps:
                return None
            return Instant(min(stamps) if name == "firstSeen" else max(stamps))
        if name in self.model.attributes:
            return self.attribute(name)
        root, *rest = name.split(".")
        return descend(self.traits.get(root), rest)

    def attribute(self, name: str) -> object:
        a = self.model.attributes[name]
        return self.aggregate(a.event_type, a.aggregate, a.property, a.where, a.within_ms)

    def selected(
        self, event_type: str, where: Iterable[AttributeCondition], within_ms: int | None
    ) -> list[AppliedEvent]:
        chosen = []
        for event in self.events:
            if event_type not in ("*", event.event_type):
                continue
            if within_ms is not None:
                end = window_end(event.timestamp, within_ms)
                if not (self.now < end and event.applied_at < end):
                    continue
            if all(self.where_holds(c, event.properties) for c in where):
                chosen.append(event)
        return chosen

    def where_holds(self, condition: AttributeCondition, properties: dict[str, Any]) -> bool:
        x = descend(properties, condition.field.split("."))
        return attribute_holds(condition.operator, x, condition.value, self.now)

    def aggregate(
        self,
        event_type: str,
        aggregate: str,
        prop: str | None,
        where: Iterable[AttributeCondition],
        within_ms: int | None,
    ) -> object:
        events = self.selected(event_type, where, within_ms)
        if aggregate == "count":
            return len(events)
        assert prop is not None
        path = prop.split(".")
        present = [(e, descend(e.properties, path)) for e in events]
        present = [(e, v) for e, v in present if v is not None]
        if aggregate == "first":
            if not present:
                return None
            return min(present, key=lambda ev: (ev[0].timestamp, ev[0].arrival))[1]
        if aggregate == "last":
            if not present:
                return None
            return max(present, key=lambda ev: (ev[0].timestamp, ev[0].arrival))[1]
        if aggregate == "distinct_count":
            return len({strict_key(v) for _, v in present})
        numbers = [v for _, v in present if is_number(v) and math.isfinite(v)]
        micros = sum(round(v * 1_000_000) for v in numbers)
        if aggregate == "sum":
            return micros / 1_000_000
        if not numbers:
            return None
        if aggregate == "avg":
            return micros / (len(numbers) * 1_000_000)
        if aggregate == "min":
            return min(numbers)
        if aggregate == "max":
            return max(numbers)
        raise ValueError(f"unknown aggregate {aggregate}")

    # -- rules -------------------------------------------------------------------------

    def segment(self, reference: str) -> bool:
        segment = self.model.segment_by_reference(reference)
        if segment.id not in self._segments:
            self._segments[segment.id] = self.condition(segment.rules)
        return self._segments[segment.id]

    def condition(self, node: object) -> bool:
        if isinstance(node, Group):
            results = (self.condition(c) for c in node.conditions)
            return all(results) if node.match == "all" else any(results)
        if isinstance(node, Not):
            return not self.condition(node.negated)
        if isinstance(node, SegmentReference):
            inside = self.segment(node.segment)
            return inside if node.operator == "in" else not inside
        if isinstance(node, EventCondition):
            return self.event_condition(node)
        assert isinstance(node, AttributeCondition)
        return attribute_holds(node.operator, self.field(node.field), node.value, self.now)

    def event_condition(self, node: EventCondition) -> bool:
        if node.aggregate is not None:
            aggregate, prop = node.aggregate, node.property
            operator, value = node.operator, node.value
        elif node.count is not None:
            aggregate, prop = "count", None
            operator, value = node.count.operator, node.count.value
        else:
            aggregate, prop, operator, value = "count", None, "gte", 1
        assert operator is not None
        x = self.aggregate(node.event, aggregate, prop, node.where, node.within_ms)
        return attribute_holds(operator, x, value, self.now)
