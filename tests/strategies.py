"""Hypothesis strategies: rules, computed attributes and event streams that hit each other.

Values come from small pools shared by the rules and the events, so conditions actually
hold for some users and not others; a few values of the wrong type are mixed in.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import strategies as st

from audience_manager.rules.attributes import ComputedAttribute
from audience_manager.rules.model import Group, parse_rules

__all__ = [
    "BASE",
    "EVENT_TYPES",
    "computed_attributes",
    "event_streams",
    "events",
    "rule_documents",
    "segment_sets",
]

BASE = 1_700_000_000_000  # 2023-11-14T22:13:20Z
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
EVENT_TYPES = ("purchase", "view", "signup")
WINDOWS = ("5s", "30s", "1m", "2m", "10m", "1h", "2h", "1d")
DURATIONS = ("1s", "10s", "30s", "1m", "5m", "1h", "3h", "1d", "30d")
SHORT_WINDOWS = ("5s", "30s", "1m", "2m", "10m")

# -- shared value pools -------------------------------------------------------------------

STRINGS = ["gold", "Gold", "silver", "", "old", "Paris", "shoes", "books", "a", "x1"]
NUMBERS: list[Any] = [0, 1, 2, 3, 10, 17, 18, 30, 30.0, 0.1, 0.2, 0.3, 0.5, 19.99, 100, 1000]
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
LISTS: list[Any] = [[], ["a"], ["a", "gold"], [1, "a"], [30], [True], [["a"]], [{"k": 1}]]
OBJECTS: list[Any] = [{"city": "Paris"}, {"city": "Berlin", "zip": "10115"}, {"city": None}, {}]
WRONG: list[Any] = ["30", "19.99", True, False, [1], {"v": 1}]

scalars = st.sampled_from([*STRINGS, *NUMBERS, True, False])
any_values = st.one_of(
    scalars,
    st.sampled_from(ISO_TIMES),
    st.sampled_from(LISTS),
    st.sampled_from(OBJECTS),
)
PATTERNS = ["^g", "old$", "[0-9]+", "a|b", "(?i)gold", "^$", "ar", "^[A-Z]", r"\d\.\d"]

# -- events -------------------------------------------------------------------------------

TRAIT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "plan": st.sampled_from(["gold", "Gold", "silver", "", 3, None]),
    "age": st.sampled_from([17, 18, 30, 30.0, 45.5, "30", True, None]),
    "tags": st.sampled_from([*LISTS, "a", None]),
    "address": st.sampled_from([*OBJECTS, {"city": {"name": "Paris"}}, "Paris", None]),
    "vip": st.sampled_from([True, False, 1, "true", None]),
    "signupAt": st.sampled_from([*ISO_TIMES, "yesterday", 1_700_000_000_000, None]),
    "eventCount": st.sampled_from([5, "many", None]),
}
TRAIT_FIELDS = (*TRAIT_VALUES, "address.city", "address.zip", "address.city.name", "tags.0")

PROPERTY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "amount": st.sampled_from(
        [0, 1, 10, 19.99, 0.5, 1.5, 2.5, 0.1, 0.2, 1000, 1500, 250.25, 0.125, 5.005, -3]
    )
    | st.sampled_from([*WRONG, None]),
    "category": st.sampled_from(["shoes", "books", "Shoes", "toys", "", 3, None, ["shoes"]]),
    "item": st.sampled_from([{"sku": "A1", "price": 5}, {"sku": "B2"}, {"sku": None}, "A1"]),
    "qty": st.sampled_from([1, 2, 3, 2.0, "2", None]),
    "at": st.sampled_from([*ISO_TIMES, "soon", 5]),
}
PROPERTY_FIELDS = (*PROPERTY_VALUES, "item.sku", "item.price")


traits = st.none() | st.fixed_dictionaries({}, optional=TRAIT_VALUES)
properties = st.fixed_dictionaries({}, optional=PROPERTY_VALUES)


@functools.cache
def offsets(spread: int = 3 * HOUR) -> st.SearchStrategy[int]:
    """Event-time offsets from ``BASE``: aligned ones (bucket edges) and arbitrary ones."""
    return st.one_of(
        st.integers(-spread // 500, spread // 500).map(lambda n: n * 500),
        st.integers(-spread, spread),
        st.sampled_from([0, -1, 1, -999, -1000, -1001, -5 * SECOND, -30 * SECOND, -MINUTE]),
    )


@functools.cache
def events(users: tuple[str, ...], spread: int = 3 * HOUR, max_size: int = 40) -> Any:
    """Events (dicts with the ``Event`` keys) of ``users``, with times around ``BASE``."""
    event = st.fixed_dictionaries(
        {
            "user_id": st.sampled_from(users),
            "event_type": st.sampled_from((*EVENT_TYPES, "other")),
            "timestamp": offsets(spread).map(lambda offset: BASE + offset),
            "properties": properties,
            "traits": traits,
        }
    )
    return st.lists(event, max_size=max_size)


def user_pools() -> st.SearchStrategy[tuple[str, ...]]:
    return st.integers(5, 30).map(lambda n: tuple(f"u{i}" for i in range(n)))


def event_streams(spread: int = 3 * HOUR, max_size: int = 40) -> st.SearchStrategy[Any]:
    """A list of events over a small user pool."""
    return user_pools().flatmap(lambda users: events(users, spread, max_size))


# -- rules --------------------------------------------------------------------------------


@functools.cache
def value_for(operator: str, relative_time: bool = True) -> st.SearchStrategy[Any]:
    """A value that fits ``operator`` (as the rule model requires), drawn from the pools."""
    if operator in ("eq", "neq"):
        return any_values
    if operator in ("gt", "gte", "lt", "lte"):
        return st.sampled_from([*STRINGS, *NUMBERS, "2023-11-14T22:00:00Z"])
    if operator == "between":
        return st.lists(st.sampled_from(NUMBERS), min_size=2, max_size=2).map(sorted)
    if operator in ("in", "not_in"):
        return st.lists(any_values, max_size=4)
    if operator in ("contains", "not_contains"):
        return st.sampled_from([*STRINGS, 1, 30, True, "ol", "1"])
    if operator in ("starts_with", "ends_with"):
        return st.sampled_from(["g", "G", "", "ld", "Par", "s", "2023-11-14"])
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
TIME_FIELDS = ("firstSeen", "lastSeen")


@functools.cache
def _operator_and_value(operator: str, relative_time: bool) -> st.SearchStrategy[Any]:
    if operator in ("exists", "not_exists"):
        return st.just({"operator": operator})
    return value_for(operator, relative_time).map(lambda v: {"operator": operator, "value": v})


@functools.cache
def _comparisons(time_field: bool, relative_time: bool) -> st.SearchStrategy[Any]:
    operators = TIME_OPERATORS if time_field else (*VALUE_OPERATORS, "exists", "not_exists")
    if not relative_time:
        operators = tuple(op for op in operators if op != "within_last")
    return st.one_of(*(_operator_and_value(op, relative_time) for op in operators))


@functools.cache
def leaf(fields: tuple[str, ...], relative_time: bool = True) -> st.SearchStrategy[Any]:
    """An attribute condition on one of ``fields``; durations only if ``relative_time``."""
    return st.sampled_from(fields).flatmap(
        lambda name: _comparisons(name in TIME_FIELDS, relative_time).map(
            lambda comparison: {"field": name, **comparison}
        )
    )


@functools.cache
def compare_spec(integers: bool) -> st.SearchStrategy[tuple[str, Any]]:
    values = st.integers(0, 4) if integers else st.sampled_from(NUMBERS)
    return st.sampled_from(COMPARE_OPERATORS).flatmap(
        lambda op: (
            st.tuples(st.just(op), st.lists(values, min_size=2, max_size=2).map(sorted))
            if op == "between"
            else st.tuples(st.just(op), values)
        )
    )


@st.composite
def _event_condition(
    draw: st.DrawFn, windows: tuple[str, ...], relative_where: bool
) -> dict[str, Any]:
    node: dict[str, Any] = {"event": draw(st.sampled_from(EVENT_TYPES))}
    where = draw(st.lists(leaf(PROPERTY_FIELDS, relative_where), max_size=2))
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
def event_condition(
    windows: tuple[str, ...] = WINDOWS, relative_where: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """``{"event": ...}`` with optional where, count or aggregate, and window."""
    return _event_condition(windows, relative_where)


ATTRIBUTE_FIELDS = ("totalSpent", "purchaseCount", "eventCount", "firstSeen", "lastSeen")


@functools.cache
def rule_documents(
    references: tuple[str, ...] = (),
    attribute_names: tuple[str, ...] = (),
    *,
    with_events: bool = True,
    relative_time: bool = True,
    windows: tuple[str, ...] = WINDOWS,
    relative_where: bool = False,
    max_depth: int = 3,
) -> st.SearchStrategy[dict[str, Any]]:
    """A rule document (JSON) whose segment references are among ``references``."""
    fields = (*TRAIT_FIELDS, *ATTRIBUTE_FIELDS, *attribute_names)
    leaves: list[st.SearchStrategy[dict[str, Any]]] = [leaf(fields, relative_time)]
    if with_events:
        leaves.append(event_condition(windows, relative_where))
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
def computed_attributes(
    draw: st.DrawFn, windows: tuple[str, ...] = WINDOWS, relative_where: bool = False
) -> list[ComputedAttribute]:
    """Zero to three computed attributes named ``attr0`` ..."""
    out = []
    for index in range(draw(st.integers(0, 3))):
        aggregate = draw(
            st.sampled_from(
                ["count", "sum", "min", "max", "avg", "first", "last", "distinct_count"]
            )
        )
        prop = None
        if aggregate != "count":
            prop = draw(st.sampled_from(PROPERTY_FIELDS))
        out.append(
            ComputedAttribute(
                name=f"attr{index}",
                event_type=draw(st.sampled_from([*EVENT_TYPES, "*"])),
                aggregate=aggregate,
                property=prop,
                where=tuple(draw(st.lists(leaf(PROPERTY_FIELDS, relative_where), max_size=1))),
                within=draw(st.none() | st.sampled_from(windows)),
            )
        )
    return out


@st.composite
def segment_sets(
    draw: st.DrawFn,
    attribute_names: list[str] | None = None,
    *,
    min_size: int = 1,
    max_size: int = 4,
    prefix: str = "s",
    earlier: list[str] | None = None,
    with_events: bool = True,
    relative_time: bool = True,
    windows: tuple[str, ...] = WINDOWS,
    relative_where: bool = False,
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
                with_events=with_events,
                relative_time=relative_time,
                windows=windows,
                relative_where=relative_where,
            )
        )
        out.append((segment_id, f"Segment {segment_id}", parse_rules(document)))
        known += [segment_id, f"Segment {segment_id}"]
    return out
