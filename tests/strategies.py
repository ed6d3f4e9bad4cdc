"""Hypothesis strategies: rules, computed attributes and event streams that hit each other.

Values come from small pools, one per field, shared by the rules and the events, so that
conditions hold for some users and not for others; values of the wrong type (strings for
numbers, booleans, lists, objects, nulls) are mixed in on both sides.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from audience_manager.rules.attributes import ComputedAttribute
from audience_manager.rules.model import (
    AttributeCondition,
    EventCondition,
    Group,
    iter_conditions,
    parse_rules,
)

__all__ = [
    "BASE",
    "EVENT_TYPES",
    "EVERY_KIND",
    "HOUR",
    "ISO_TIMES",
    "LOOK_ALIKES",
    "MINUTE",
    "SHORT_WINDOWS",
    "TRICKY_AMOUNTS",
    "computed_attributes",
    "event_streams",
    "events",
    "instants",
    "kind_condition",
    "rule_documents",
    "segment_sets",
    "trait_keys",
    "user_pools",
]

BASE = 1_700_000_000_000  # 2023-11-14T22:13:20Z
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
EVENT_TYPES = ("purchase", "view", "signup")
WINDOWS = ("5s", "30s", "1m", "2m", "10m", "1h", "2h", "1d")
SHORT_WINDOWS = ("5s", "30s", "1m", "2m", "10m")
DURATIONS = ("1s", "10s", "30s", "1m", "5m", "1h", "3h", "1d", "30d")

# -- value pools --------------------------------------------------------------------------

ISO_TIMES = [
    "2023-11-14T22:13:20Z",
    "2023-11-14T22:10:00Z",
    "2023-11-14T21:00:00",
    "2023-11-14T23:30:00+01:00",
    "2023-11-14",
    "2023-11-15",
    "2023-11-14T22:13:25.500Z",
    "2023-11-13T12:00:00Z",
]
AMOUNTS: list[Any] = [0, 1, 10, 19.99, 0.5, 1.5, 2.5, 0.1, 0.2, 1000, 1500, 250.25, 0.125, -3]
WRONG: list[Any] = ["30", "19.99", True, False, [1], {"v": 1}]
LISTS: list[Any] = [[], ["a"], ["a", "gold"], [1, "a"], [30], [True], [["a"]], [{"k": 1}]]
OBJECTS: list[Any] = [{"city": "Paris"}, {"city": "Berlin", "zip": "10115"}, {"city": None}, {}]

TRAIT_POOLS: dict[str, list[Any]] = {
    "plan": ["gold", "Gold", "silver", "", 3],
    "age": [17, 18, 30, 30.0, 45.5, "30", True],
    "tags": [*LISTS, "a"],
    "address": [*OBJECTS, {"city": {"name": "Paris"}}, "Paris"],
    "vip": [True, False, 1, "true"],
    "signupAt": [*ISO_TIMES, "yesterday", BASE],
    "eventCount": [5, "many"],  # hidden behind the built-in of that name
}
PROPERTY_POOLS: dict[str, list[Any]] = {
    "amount": [*AMOUNTS, *WRONG],
    "category": ["shoes", "books", "Shoes", "toys", "", 3, ["shoes"]],
    "item": [{"sku": "A1", "price": 5}, {"sku": "B2", "price": 2.5}, {"sku": None}, "A1"],
    "qty": [1, 2, 3, 2.0, "2"],
    "at": [*ISO_TIMES, "soon", 5],
}
# What rules compare each field with: the values events carry, and a few more.
FIELD_POOLS: dict[str, list[Any]] = {
    **TRAIT_POOLS,
    **PROPERTY_POOLS,
    "address.city": ["Paris", "Berlin", {"name": "Paris"}],
    "address.zip": ["10115", 10115],
    "address.city.name": ["Paris"],
    "tags.0": ["a", 1],
    "item.sku": ["A1", "B2"],
    "item.price": [5, 5.0, 2.5],
    "totalSpent": [0, 0.3, 1, 10, 19.99, 20, 20.99, 1000, 1500, 2500, "0"],
    "purchaseCount": [0, 1, 2, 3, True],
    "eventCount": [0, 1, 2, 3, 5, "5"],
}
COMPUTED_POOL: list[Any] = [0, 1, 2, 3, 0.5, 10, 19.99, "shoes", "books", "A1", ISO_TIMES[0]]
TRAIT_FIELDS = (*TRAIT_POOLS, "address.city", "address.zip", "address.city.name", "tags.0")
PROPERTY_FIELDS = (*PROPERTY_POOLS, "item.sku", "item.price")
ATTRIBUTE_FIELDS = ("totalSpent", "purchaseCount", "eventCount", "firstSeen", "lastSeen")
TIME_FIELDS = ("firstSeen", "lastSeen")
PATTERNS = ["^g", "old$", "[0-9]+", "a|b", "(?i)gold", "^$", "ar", "^[A-Z]", r"\d\.\d", "^sho"]

# -- events -------------------------------------------------------------------------------


def _optional(pool: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([*pool, None])  # null: a removed trait, a missing property


@functools.cache
def traits(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any] | None]:
    """No traits, or some of ``keys`` with values from their pools."""
    return st.none() | st.fixed_dictionaries(
        {}, optional={key: _optional(TRAIT_POOLS[key]) for key in keys}
    )


def trait_keys() -> st.SearchStrategy[tuple[str, ...]]:
    """The one to three traits an example's events set and its rules look at."""
    return st.lists(st.sampled_from(list(TRAIT_POOLS)), min_size=1, max_size=3, unique=True).map(
        lambda keys: tuple(sorted(keys))
    )


def trait_fields(keys: tuple[str, ...]) -> tuple[str, ...]:
    """Fields of the traits ``keys``, dotted paths included."""
    return tuple(f for f in TRAIT_FIELDS if f.split(".")[0] in keys)


properties = st.fixed_dictionaries(
    {}, optional={key: _optional(pool) for key, pool in PROPERTY_POOLS.items()}
)


@functools.cache
def offsets(spread: int = 3 * HOUR) -> st.SearchStrategy[int]:
    """Event-time offsets from ``BASE``: aligned ones (bucket edges) and arbitrary ones."""
    return st.one_of(
        st.integers(-spread // 500, spread // 500).map(lambda n: n * 500),
        st.integers(-spread, spread),
        st.sampled_from([0, -1, 1, -999, -1000, -1001, -5 * SECOND, -30 * SECOND, -MINUTE]),
    )


@functools.cache
def events(
    users: tuple[str, ...],
    keys: tuple[str, ...] = tuple(TRAIT_POOLS),
    spread: int = 3 * HOUR,
    max_size: int = 40,
) -> Any:
    """Events (dicts with the ``Event`` keys) of ``users``, with times around ``BASE``.

    Half of the events go to the first three users, so that some users have many.
    """
    event = st.fixed_dictionaries(
        {
            "user_id": st.sampled_from(users[:3]) | st.sampled_from(users),
            "event_type": st.sampled_from((*EVENT_TYPES, "other")),
            "timestamp": offsets(spread).map(lambda offset: BASE + offset),
            "properties": properties,
            "traits": traits(keys),
        }
    )
    return st.lists(event, min_size=max_size // 4, max_size=max_size)


def user_pools() -> st.SearchStrategy[tuple[str, ...]]:
    """Five to thirty user ids."""
    return st.integers(5, 30).map(lambda n: tuple(f"u{i}" for i in range(n)))


def event_streams(
    keys: tuple[str, ...] = tuple(TRAIT_POOLS), spread: int = 3 * HOUR, max_size: int = 40
) -> st.SearchStrategy[Any]:
    """A list of events setting traits ``keys`` over a small user pool."""
    return user_pools().flatmap(lambda users: events(users, keys, spread, max_size))


_UNIT_MS = {"s": SECOND, "m": MINUTE, "h": HOUR, "d": 24 * HOUR}


def duration_ms(text: str) -> int:
    return int(text[:-1]) * _UNIT_MS[text[-1]]


def _iso_ms(text: str) -> int:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@st.composite
def _edge_instant(
    draw: st.DrawFn,
    stamps: tuple[tuple[int, ...], tuple[int, ...]],
    durations: tuple[int, ...],
    windows: tuple[int, ...],
) -> int:
    at = draw(st.sampled_from(stamps[0]) | st.sampled_from(stamps[1]))
    if draw(st.booleans()):
        edge = at + draw(st.sampled_from(durations))
    else:
        window = draw(st.sampled_from(windows))
        width = max(1000, window // 100)
        edge = (at // width + 1) * width + window
    return edge + draw(st.sampled_from([-1, 0, 0, 1]))


def instants(
    stream: list[dict[str, Any]],
    segments: Sequence[tuple[str, str, Group]] = (),
    attributes: Sequence[ComputedAttribute] = (),
) -> st.SearchStrategy[int]:
    """A clock time: around ``BASE``, or on the edge of a duration or window (of the rules
    given, else any) after an event time or a time trait, where off-by-one mistakes show."""
    # First and last seen of every user, and time traits, are what time operators read.
    seen: dict[str, list[int]] = {}
    for event in stream:
        seen.setdefault(event["user_id"], []).append(event["timestamp"])
    edges_of = {BASE, *map(_iso_ms, ISO_TIMES)}
    edges_of.update(t for times in seen.values() for t in (min(times), max(times)))
    every = edges_of | {e["timestamp"] for e in stream}
    durations: set[int] = set()
    windows = {a.within_ms for a in attributes if a.within_ms is not None}
    for _, _, rules in segments:
        for node in iter_conditions(rules):
            if isinstance(node, AttributeCondition) and node.duration_ms is not None:
                durations.add(node.duration_ms)
            elif isinstance(node, EventCondition) and node.within_ms is not None:
                windows.add(node.within_ms)
    edges = _edge_instant(
        (tuple(sorted(edges_of)), tuple(sorted(every))),
        tuple(sorted(durations or map(duration_ms, DURATIONS))),
        tuple(sorted(windows or map(duration_ms, WINDOWS))),
    )
    return st.integers(-HOUR, 2 * HOUR).map(lambda d: BASE + d) | edges


# -- attribute conditions -----------------------------------------------------------------

ALL_VALUES = list({repr(v): v for pool in FIELD_POOLS.values() for v in pool}.values())


def _strings(pool: list[Any]) -> list[str]:
    return [v for v in pool if isinstance(v, str)]


def _numbers(pool: list[Any]) -> list[Any]:
    return [v for v in pool if isinstance(v, int | float) and not isinstance(v, bool)]


def _affixes(pool: list[Any]) -> list[str]:
    out = {""}
    for text in _strings(pool):
        out.update({text[:1], text[:3], text[-2:], text})
    return sorted(out)


def _elements(pool: list[Any]) -> list[Any]:
    """Candidates for ``contains``: substrings of strings and scalar elements of lists."""
    out: dict[str, Any] = {}
    for value in pool:
        if isinstance(value, str):
            for part in (value, value[1:3], value[:1]):
                out[repr(part)] = part
        elif isinstance(value, list):
            out.update({repr(v): v for v in value if isinstance(v, str | int | float)})
        elif isinstance(value, int | float):
            out[repr(value)] = value
    return list(out.values()) or ["a"]


@functools.cache
def value_for(operator: str, name: str, relative_time: bool = True) -> st.SearchStrategy[Any]:
    """A value for ``operator`` on field ``name``: mostly from the field's pool."""
    own = FIELD_POOLS.get(name, COMPUTED_POOL)
    if operator in ("eq", "neq"):
        return st.one_of(st.sampled_from(own), st.sampled_from(own), st.sampled_from(ALL_VALUES))
    if operator in ("gt", "gte", "lt", "lte"):
        return st.sampled_from(_numbers(own) + _strings(own) or [1]) | st.sampled_from(
            [0, 1, 10, 19.99, "m", "gold", "2023-11-14T22:00:00Z"]
        )
    if operator == "between":
        numbers = [*_numbers(own), 0, 1, 10, 19.99, 1000]
        return st.lists(st.sampled_from(numbers), min_size=2, max_size=2).map(sorted)
    if operator in ("in", "not_in"):
        items = st.one_of(st.sampled_from(own), st.sampled_from(own), st.sampled_from(ALL_VALUES))
        return st.lists(items, max_size=4)
    if operator in ("contains", "not_contains"):
        elements = [e for e in _elements(own) if e is not None]
        return st.sampled_from(elements) | st.sampled_from(["ol", "a", 1, 30, True])
    if operator in ("starts_with", "ends_with"):
        return st.sampled_from(_affixes(own)) | st.sampled_from(["2023-11-14", "G"])
    if operator == "matches":
        return st.sampled_from(PATTERNS)
    if operator == "within_last":
        return st.sampled_from(DURATIONS)
    if operator in ("before", "after"):
        return st.sampled_from([*DURATIONS, *ISO_TIMES] if relative_time else ISO_TIMES)
    return st.none()


VALUE_OPERATORS = (
    "eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains",
    "not_contains", "starts_with", "ends_with", "matches", "before", "after", "within_last",
)  # fmt: skip
TIME_OPERATORS = ("before", "after", "within_last", "exists", "not_exists")
COMPARE_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "between")


@functools.cache
def _comparison(operator: str, name: str, relative_time: bool) -> st.SearchStrategy[Any]:
    if operator in ("exists", "not_exists"):
        return st.just({"field": name, "operator": operator})
    return value_for(operator, name, relative_time).map(
        lambda value: {"field": name, "operator": operator, "value": value}
    )


@functools.cache
def _comparisons(name: str, relative_time: bool, time_only: bool) -> st.SearchStrategy[Any]:
    if time_only or name in TIME_FIELDS:
        operators = TIME_OPERATORS
    else:
        operators = (*VALUE_OPERATORS, "exists", "not_exists")
    if not relative_time:
        operators = tuple(op for op in operators if op != "within_last")
    return st.one_of(*(_comparison(op, name, relative_time) for op in operators))


@functools.cache
def leaf(
    fields: tuple[str, ...], relative_time: bool = True, time_only: bool = False
) -> st.SearchStrategy[Any]:
    """An attribute condition on one of ``fields``; durations only if ``relative_time``,
    time operators only if ``time_only``."""
    return st.sampled_from(fields).flatmap(
        lambda name: _comparisons(name, relative_time, time_only)
    )


# -- event conditions and computed attributes ---------------------------------------------


@functools.cache
def compare_spec(integers: bool) -> st.SearchStrategy[tuple[str, Any]]:
    """An operator and value comparing a count (``integers``) or an aggregate."""
    values = st.integers(0, 4) if integers else st.sampled_from(FIELD_POOLS["totalSpent"][:-1])
    return st.sampled_from(COMPARE_OPERATORS).flatmap(
        lambda op: (
            st.tuples(st.just(op), st.lists(values, min_size=2, max_size=2).map(sorted))
            if op == "between"
            else st.tuples(st.just(op), values)
        )
    )


# A ``where`` is decided when the event arrives, so durations are rejected there.
where_conditions = st.lists(leaf(PROPERTY_FIELDS, relative_time=False), max_size=2)


@st.composite
def _event_condition(draw: st.DrawFn, windows: tuple[str, ...]) -> dict[str, Any]:
    node: dict[str, Any] = {"event": draw(st.sampled_from(EVENT_TYPES))}
    where = draw(where_conditions)
    if where:
        node["where"] = where
    shape = draw(st.sampled_from(["exists", "count", "aggregate"]))
    if shape == "count":
        operator, value = draw(compare_spec(integers=True))
        node["count"] = {"operator": operator, "value": value}
    elif shape == "aggregate":
        aggregate = draw(st.sampled_from(["count", "sum", "min", "max", "avg"]))
        node["aggregate"] = aggregate
        if aggregate != "count":
            node["property"] = draw(st.sampled_from(["amount", "amount", "qty", "item.price"]))
        node["operator"], node["value"] = draw(compare_spec(integers=aggregate == "count"))
    if draw(st.booleans()):
        node["within"] = draw(st.sampled_from(windows))
    return node


@functools.cache
def event_condition(windows: tuple[str, ...] = WINDOWS) -> st.SearchStrategy[dict[str, Any]]:
    """``{"event": ...}`` with optional where, count or aggregate, and window."""
    return _event_condition(windows)


@functools.cache
def windowed_event_condition(windows: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """A windowed event condition without filters: it changes when an event leaves."""
    return st.builds(
        lambda event, within, count: {"event": event, "within": within, **count},
        st.sampled_from(EVENT_TYPES),
        st.sampled_from(windows),
        st.just({})
        | compare_spec(integers=True).map(lambda c: {"count": {"operator": c[0], "value": c[1]}}),
    )


@st.composite
def computed_attributes(
    draw: st.DrawFn, windows: tuple[str, ...] = WINDOWS
) -> list[ComputedAttribute]:
    """Zero to three computed attributes named ``attr0`` ..."""
    out = []
    for index in range(draw(st.integers(0, 3))):
        aggregate = draw(
            st.sampled_from(
                ["count", "sum", "min", "max", "avg", "first", "last", "distinct_count"]
            )
        )
        prop = None if aggregate == "count" else draw(st.sampled_from(PROPERTY_FIELDS))
        out.append(
            ComputedAttribute(
                name=f"attr{index}",
                event_type=draw(st.sampled_from([*EVENT_TYPES, "*"])),
                aggregate=aggregate,
                property=prop,
                where=tuple(draw(where_conditions)),
                within=draw(st.none() | st.sampled_from(windows)),
            )
        )
    return out


# -- rules --------------------------------------------------------------------------------


@functools.cache
def rule_documents(
    references: tuple[str, ...] = (),
    attribute_names: tuple[str, ...] = (),
    keys: tuple[str, ...] = tuple(TRAIT_POOLS),
    *,
    with_events: bool = True,
    relative_time: bool = True,
    windows: tuple[str, ...] = WINDOWS,
    time_only: bool = False,
    max_depth: int = 3,
) -> st.SearchStrategy[dict[str, Any]]:
    """A rule document (JSON) whose segment references are among ``references``.

    ``time_only`` keeps to time operators on ``firstSeen``, ``lastSeen`` and the time trait.
    """
    if time_only:
        fields = (*TIME_FIELDS, "signupAt")
    else:
        fields = (*trait_fields(keys), *ATTRIBUTE_FIELDS, *attribute_names)
    leaves: list[st.SearchStrategy[dict[str, Any]]] = [leaf(fields, relative_time, time_only)]
    if with_events and time_only:
        leaves.append(windowed_event_condition(windows))
    elif with_events:
        leaves.append(event_condition(windows))
    if references:
        leaves.append(
            st.builds(
                lambda s, op: {"segment": s, "operator": op},
                st.sampled_from(references),
                st.sampled_from(["in", "not_in"]),
            )
        )

    def condition(depth: int) -> st.SearchStrategy[dict[str, Any]]:
        if depth >= max_depth:
            return st.one_of(*leaves)
        return st.one_of(
            *leaves,
            group(depth + 1),
            st.deferred(lambda: condition(depth + 1)).map(lambda c: {"not": c}),
        )

    def group(depth: int) -> st.SearchStrategy[dict[str, Any]]:
        return st.builds(
            lambda match, conditions: {"match": match, "conditions": conditions},
            st.sampled_from(["all", "any"]),
            st.lists(st.deferred(lambda: condition(depth)), min_size=1, max_size=3),
        )

    return group(1)


@st.composite
def segment_sets(
    draw: st.DrawFn,
    attribute_names: list[str] | None = None,
    keys: tuple[str, ...] = tuple(TRAIT_POOLS),
    *,
    min_size: int = 1,
    max_size: int = 4,
    prefix: str = "s",
    earlier: list[str] | None = None,
    with_events: bool = True,
    relative_time: bool = True,
    windows: tuple[str, ...] = WINDOWS,
    time_only: bool = False,
) -> list[tuple[str, str, Group]]:
    """Segments ``(id, name, rules)``; each may refer to the ones before it (id or name)."""
    out: list[tuple[str, str, Group]] = []
    known = list(earlier or [])
    for index in range(draw(st.integers(min_size, max_size))):
        segment_id = f"{prefix}{index}"
        document = draw(
            rule_documents(
                tuple(known),
                tuple(attribute_names or ()),
                keys,
                with_events=with_events,
                relative_time=relative_time,
                windows=windows,
                time_only=time_only,
            )
        )
        out.append((segment_id, f"Segment {segment_id}", parse_rules(document)))
        known += [segment_id, f"Segment {segment_id}"]
    return out


# -- one condition against values of every type -------------------------------------------

EVERY_KIND: list[Any] = [
    "", "a", "A", "ab", "ba", "gold", "Gold", "old", "1", "30", "true", "a1",
    "2023-11-14", "2023-11-14T22:13:20Z",
    0, 1, 1.0, -1, 0.5, 30, 30.0,
    True, False,
    [], [1], [1.0], [True], ["a"], ["a", 1], ["b", True], [[1]], [{"k": 1}],
    {}, {"k": 1}, {"k": True}, {"k": "a"}, {"k": [1]}, {"k": None}, [None], ["a", None],
]  # fmt: skip
"""Values of every family, with the look-alikes strict typing must tell apart."""

LOOK_ALIKES: list[Any] = [1, 1.0, True, "1", [1], [1.0], [True], {"k": 1}, {"k": 1.0}, 0, False]
"""Values equal under Python's ``==`` that are not all strictly equal."""

_SCALARS = [v for v in EVERY_KIND if isinstance(v, str | int | float)]
_NUMBERS = [v for v in _SCALARS if not isinstance(v, str | bool)]


@functools.cache
def kind_value_for(operator: str) -> st.SearchStrategy[Any]:
    """A rule value for ``operator`` drawn from ``EVERY_KIND`` (as the model allows)."""
    if operator in ("eq", "neq"):
        return st.sampled_from(EVERY_KIND)
    if operator in ("gt", "gte", "lt", "lte"):
        return st.sampled_from([v for v in _SCALARS if not isinstance(v, bool)])
    if operator == "between":
        return st.lists(st.sampled_from(_NUMBERS), min_size=2, max_size=2).map(sorted)
    if operator in ("in", "not_in"):
        return st.lists(st.sampled_from(EVERY_KIND), max_size=4)
    if operator in ("contains", "not_contains"):
        return st.sampled_from(_SCALARS)
    if operator in ("starts_with", "ends_with"):
        return st.sampled_from([v for v in _SCALARS if isinstance(v, str)])
    if operator == "matches":
        return st.sampled_from([*PATTERNS, "a", "b$", "^1", "1", "^$", "[ab]{2}"])
    return value_for(operator, "signupAt")


@functools.cache
def kind_condition(field: str) -> st.SearchStrategy[dict[str, Any]]:
    """One attribute condition on ``field`` with any operator."""

    def build(operator: str) -> st.SearchStrategy[dict[str, Any]]:
        if operator in ("exists", "not_exists"):
            return st.just({"field": field, "operator": operator})
        return kind_value_for(operator).map(
            lambda value: {"field": field, "operator": operator, "value": value}
        )

    operators = (*VALUE_OPERATORS, "exists", "not_exists")
    return st.sampled_from(operators).flatmap(build)


# -- exact sums ---------------------------------------------------------------------------

TRICKY_AMOUNTS: list[Any] = [
    0.1, 0.2, 0.3, 0.7, 0.01, 19.99, 1.005, 2.675, 33.333333, 0.0000005, 0.0000015,
    0.0000025, 1e-7, 100, 1, 5.5,
]  # fmt: skip
"""Amounts whose float sums differ from their exact sums, and millionth halves (to even)."""
