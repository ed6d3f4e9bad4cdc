from typing import Any

import pytest

from audience_manager.rules.attributes import (
    ALL_EVENTS,
    BUILTIN_ATTRIBUTES,
    RESERVED_NAMES,
    TIME_ATTRIBUTES,
    ComputedAttribute,
    parse_attribute,
)
from audience_manager.rules.errors import RuleValidationError
from audience_manager.rules.model import AttributeCondition

BASE: dict[str, Any] = {
    "name": "orderTotal",
    "eventType": "order",
    "aggregate": "sum",
    "property": "total",
}
SOME_WHERE = {"field": "x", "operator": "eq", "value": 1}


def with_(**changes: Any) -> dict[str, Any]:
    data = {**BASE, **changes}
    return {key: value for key, value in data.items() if value is not None}


def issues(data: object, path: str = "attribute") -> list[tuple[str, str]]:
    with pytest.raises(RuleValidationError) as info:
        parse_attribute(data, path=path)
    return [(issue.path, issue.message) for issue in info.value.issues]


def test_builtins() -> None:
    assert set(BUILTIN_ATTRIBUTES) == {"totalSpent", "purchaseCount", "eventCount"}
    total = BUILTIN_ATTRIBUTES["totalSpent"]
    assert (total.event_type, total.aggregate, total.property) == ("purchase", "sum", "amount")
    purchases = BUILTIN_ATTRIBUTES["purchaseCount"]
    assert (purchases.event_type, purchases.aggregate, purchases.property) == (
        "purchase",
        "count",
        None,
    )
    events = BUILTIN_ATTRIBUTES["eventCount"]
    assert (events.event_type, events.aggregate) == (ALL_EVENTS, "count")
    assert all(a.within_ms is None and a.where == () for a in BUILTIN_ATTRIBUTES.values())
    assert {"firstSeen", "lastSeen"} == TIME_ATTRIBUTES
    assert set(BUILTIN_ATTRIBUTES) | TIME_ATTRIBUTES == RESERVED_NAMES


def test_parse_full_definition() -> None:
    attribute = parse_attribute(
        {
            "name": "bigOrders30d",
            "eventType": "order",
            "aggregate": "count",
            "where": [{"field": "total", "operator": "gt", "value": 100}],
            "within": "30d",
            "description": "Orders over 100 in the last 30 days",
        }
    )
    assert attribute.event_type == "order"
    assert attribute.property is None
    assert attribute.where == (AttributeCondition(field="total", operator="gt", value=100),)
    assert attribute.within_ms == 30 * 86_400_000
    assert attribute.model_dump(exclude_unset=True)["eventType"] == "order"
    assert parse_attribute(attribute.model_dump(mode="json")) == attribute


@pytest.mark.parametrize(
    "data",
    [
        BASE,
        with_(event_type="order", eventType=None),  # field names work as well as aliases
        with_(eventType=ALL_EVENTS),
        with_(eventType="app:open.v2-x_y"),
        with_(aggregate="count", property=None),
        with_(aggregate="distinct_count", property="sku"),
        with_(aggregate="first", property="address.city"),
        with_(aggregate="last", property="plan"),
        with_(aggregate="min"),
        with_(aggregate="max"),
        with_(aggregate="avg"),
        with_(within="365d"),
        with_(within="90s"),
        with_(name="_x"),
        with_(name="a" * 64),
        with_(name="Total_2"),
    ],
)
def test_valid_attributes(data: dict[str, Any]) -> None:
    assert isinstance(parse_attribute(data), ComputedAttribute)


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (with_(name=""), "attribute.name", "invalid name ''"),
        (with_(name="2fast"), "attribute.name", "invalid name '2fast'"),
        (with_(name="a.b"), "attribute.name", "invalid name"),
        (with_(name="a" * 65), "attribute.name", "invalid name"),
        (with_(name=None), "attribute.name", "'name' is required"),
        (with_(eventType="has space"), "attribute.eventType", "invalid event type"),
        (with_(eventType="**"), "attribute.eventType", "invalid event type"),
        (with_(eventType=None), "attribute.eventType", "'eventType' is required"),
        (with_(aggregate="median"), "attribute.aggregate", "must be one of"),
        (with_(property=None), "attribute.property", "aggregate sum needs a property"),
        (with_(aggregate="count"), "attribute.property", "aggregate count takes no property"),
        (with_(property="a..b"), "attribute.property", "not a dotted path"),
        (with_(within="366d"), "attribute.within", "window '366d' is longer than 365d"),
        (with_(within="30"), "attribute.within", "invalid duration '30'"),
        (
            with_(where=[{"field": "x", "operator": "foo"}]),
            "attribute.where[0].operator",
            "unknown operator 'foo'",
        ),
        (with_(where=[SOME_WHERE] * 201), "attribute.where", "must have at most 200 item(s)"),
        (with_(event_type="x"), "attribute.event_type", "unknown key 'event_type'"),
        (with_(extra=1), "attribute.extra", "unknown key 'extra'"),
        ("orderTotal", "attribute", "must be an object"),
    ],
)
def test_invalid_attributes(data: object, path: str, message: str) -> None:
    found = issues(data)
    assert [p for p, _ in found] == [path]
    assert message in found[0][1]


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_names_are_refused(name: str) -> None:
    assert issues(with_(name=name)) == [("attribute.name", f"{name!r} is a built-in attribute")]


def test_reserved_name_is_reported_with_other_issues() -> None:
    assert [path for path, _ in issues(with_(name="totalSpent", within="0d"), "body")] == [
        "body.name",
        "body.within",
    ]


def test_built_attribute_is_accepted() -> None:
    attribute = ComputedAttribute(name="n", event_type="order", aggregate="count")
    assert parse_attribute(attribute) is attribute
    with pytest.raises(RuleValidationError):
        parse_attribute(BUILTIN_ATTRIBUTES["eventCount"])
