"""Hand-computed cases for the reference interpreter, so that it is right on its own."""

from __future__ import annotations

from typing import Any

import pytest
from reference import ReferenceModel, attribute_holds, strict_equal, window_end

from audience_manager.rules.attributes import ComputedAttribute
from audience_manager.rules.model import parse_rules

NOW = 1_700_000_000_000


def event(user: str = "u1", event_type: str = "purchase", t: int = NOW, **extra: Any) -> Any:
    return {
        "user_id": user,
        "event_type": event_type,
        "timestamp": t,
        "properties": extra.get("properties", {}),
        "traits": extra.get("traits"),
    }


def model_with(rules: dict[str, Any], *events: dict[str, Any], at: int = NOW) -> ReferenceModel:
    model = ReferenceModel.create()
    model.add_segment("s", "S", parse_rules(rules))
    model.apply(events, at)
    return model


def single(field: str, operator: str, value: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = {"field": field, "operator": operator}
    if operator not in ("exists", "not_exists"):
        node["value"] = value
    return {"conditions": [node]}


def test_seed_example() -> None:
    rules = single("totalSpent", "gt", 1000)
    assert model_with(rules, event(properties={"amount": 1500})).members("s", NOW) == {"u1"}
    assert model_with(rules, event(properties={"amount": 1000})).members("s", NOW) == set()
    assert model_with(rules, event(properties={"amount": "1500"})).members("s", NOW) == set()


def test_built_ins_of_a_user_without_purchases() -> None:
    model = model_with(single("totalSpent", "eq", 0), event(event_type="view", t=NOW - 5))
    profile = model.profile("u1", NOW)
    assert profile is not None
    assert profile["attributes"] == {"totalSpent": 0, "purchaseCount": 0, "eventCount": 1}
    assert (profile["firstSeen"], profile["lastSeen"]) == (NOW - 5, NOW - 5)
    assert profile["segments"] == ["s"]


@pytest.mark.parametrize(
    ("operator", "x", "value", "expected"),
    [
        ("eq", "30", 30, False),
        ("eq", 30, 30.0, True),
        ("eq", True, 1, False),
        ("eq", 1, True, False),
        ("neq", "30", 30, False),
        ("neq", 31, 30, True),
        ("gt", True, 0, False),
        ("gt", "b", "a", True),
        ("gt", "B", "a", False),
        ("lt", "10", 9, False),
        ("between", "5", [1, 10], False),
        ("between", 10, [1, 10], True),
        ("in", 1, [True, "1"], False),
        ("in", [1, "a"], [[1, "a"]], True),
        ("in", {"a": 1}, [{"a": 1.0}], True),
        ("in", {"a": 1}, [{"a": True}], False),
        ("not_in", 3, ["a", True], False),
        ("not_in", 3, ["a", 4], True),
        ("not_in", 3, [], False),
        ("not_in", 3, [3.0, "x"], False),
        ("contains", "gold", "ol", True),
        ("contains", ["a", 1], 1, True),
        ("contains", ["a", 1], True, False),
        ("contains", "a1", 1, False),
        ("not_contains", "a1", 1, False),
        ("not_contains", ["a"], "b", True),
        ("not_contains", 5, "b", False),
        ("starts_with", 123, "1", False),
        ("matches", "Gold", "old", True),
        ("matches", "Gold", "^old", False),
        ("matches", "gold", "G", False),
        ("matches", 7, "7", False),
        ("exists", None, None, False),
        ("not_exists", None, None, True),
        ("neq", None, 1, False),
        ("not_in", None, [1], False),
        ("before", "2023-11-14", "2023-11-14T00:00:01Z", True),
        ("before", "2023-11-14T00:00:00", "2023-11-14", False),
        ("after", "2023-11-14T01:30:00+01:00", "2023-11-14T00:29:59Z", True),
        ("after", 1_700_000_000_000, "2020-01-01", False),
        ("before", "yesterday", "2030-01-01", False),
    ],
)
def test_operator_semantics(operator: str, x: Any, value: Any, expected: bool) -> None:
    assert attribute_holds(operator, x, value, NOW) is expected


def test_not_in_needs_an_item_of_the_attributes_family() -> None:
    rules = single("plan", "not_in", [1, True, ["gold"]])
    model = model_with(rules, event(traits={"plan": "silver"}))
    assert model.members("s", NOW) == set()
    # ... and "anything but, or missing" is written with not/eq.
    negated = {"conditions": [{"not": {"field": "plan", "operator": "in", "value": ["gold"]}}]}
    assert model_with(negated, event(event_type="view")).members("s", NOW) == {"u1"}


def test_relative_time_operators() -> None:
    minute = 60_000
    assert attribute_holds("within_last", "2023-11-14T22:13:20Z", "1m", NOW)
    assert attribute_holds("within_last", "2023-11-14T22:12:20Z", "1m", NOW)  # now - d
    assert not attribute_holds("within_last", "2023-11-14T22:12:19.999Z", "1m", NOW)
    assert not attribute_holds("within_last", "2023-11-14T22:13:20.001Z", "1m", NOW)  # future
    rules = single("lastSeen", "before", "1m")
    model = model_with(rules, event(t=NOW - minute))
    assert model.members("s", NOW) == set()  # x < now - d, strictly
    assert model.members("s", NOW + 1) == {"u1"}
    assert model_with(single("firstSeen", "after", "1m"), event(t=NOW - minute + 1)).members(
        "s", NOW
    ) == {"u1"}


def test_window_edges() -> None:
    window = 3_600_000  # 1h: buckets of 36 s
    rules = {"conditions": [{"event": "purchase", "within": "1h"}]}
    bucket = NOW - NOW % 36_000  # start of the bucket NOW lies in
    t = bucket + 5
    assert window_end(t, window) == bucket + 36_000 + window
    model = model_with(rules, event(t=t))
    assert model.members("s", t + window) == {"u1"}  # counts at exactly t + W
    assert model.members("s", bucket + 36_000 + window - 1) == {"u1"}
    assert model.members("s", bucket + 36_000 + window) == set()  # left by t + W + w
    assert bucket + 36_000 + window <= t + window + 36_000
    # Short windows use buckets of 1 s.
    assert window_end(NOW + 999, 5_000) == NOW + 6_000
    assert window_end(NOW + 1_000, 5_000) == NOW + 7_000


def test_an_event_arriving_after_its_bucket_left_never_counts() -> None:
    rules = {"conditions": [{"event": "purchase", "within": "5s"}]}
    late = model_with(rules, event(t=NOW), at=NOW + 6_000)
    assert late.members("s", NOW + 6_000) == set()
    on_time = model_with(rules, event(t=NOW), at=NOW + 5_999)
    assert on_time.members("s", NOW + 5_999) == {"u1"}


def test_sums_are_exact_to_six_decimals() -> None:
    events = [event(properties={"amount": 0.1}), event(properties={"amount": 0.2})]
    assert 0.1 + 0.2 != 0.3
    assert model_with(single("totalSpent", "eq", 0.3), *events).members("s", NOW) == {"u1"}
    rules = {
        "conditions": [
            {"event": "purchase", "aggregate": "avg", "property": "amount", "operator": "eq",
             "value": 0.15}
        ]
    }  # fmt: skip
    assert model_with(rules, *events).members("s", NOW) == {"u1"}
    # Non-numbers are skipped; a sum over nothing is 0, an average is missing.
    rules["conditions"][0]["operator"] = "lte"
    rules["conditions"][0]["value"] = 1e9
    assert model_with(rules, event(properties={"amount": "3"})).members("s", NOW) == set()
    assert model_with(single("totalSpent", "eq", 0), event(properties={"amount": True})).members(
        "s", NOW
    ) == {"u1"}


def test_traits_merge_by_event_time_then_arrival() -> None:
    model = ReferenceModel.create()
    model.apply(
        [
            event(t=NOW, traits={"plan": "gold", "age": 30}),
            event(t=NOW - 1, traits={"plan": "silver", "city": "Paris"}),  # older: loses plan
            event(t=NOW, traits={"age": 31}),  # same time, later arrival: wins
            event(t=NOW + 1, traits={"city": None}),  # null removes
        ],
        NOW,
    )
    profile = model.profile("u1", NOW)
    assert profile is not None
    assert profile["traits"] == {"plan": "gold", "age": 31}


def test_dotted_paths_and_attribute_names_first() -> None:
    rules = single("address.city", "eq", "Paris")
    model = model_with(rules, event(traits={"address": {"city": "Paris"}}))
    assert model.members("s", NOW) == {"u1"}
    assert model_with(rules, event(traits={"address": "Paris"})).members("s", NOW) == set()
    # A trait named like a built-in is hidden behind the built-in.
    shadowed = single("eventCount", "eq", 5)
    assert model_with(shadowed, event(traits={"eventCount": 5})).members("s", NOW) == set()


def test_computed_first_last_distinct() -> None:
    attributes = [
        ComputedAttribute(name="a", event_type="view", aggregate=a, property="category")
        for a in ("first", "last", "distinct_count")
    ]
    model = ReferenceModel.create([a.model_copy(update={"name": a.aggregate}) for a in attributes])
    model.apply(
        [
            event(event_type="view", t=NOW, properties={"category": "b"}),
            event(event_type="view", t=NOW - 1, properties={"category": 1}),
            event(event_type="view", t=NOW - 1, properties={"category": 1.0}),
            event(event_type="view", t=NOW, properties={"category": True}),
            event(event_type="view", t=NOW + 1, properties={}),
        ],
        NOW,
    )
    profile = model.profile("u1", NOW)
    assert profile is not None
    attributes_seen = profile["attributes"]
    assert strict_equal(attributes_seen["first"], 1)
    assert attributes_seen["last"] is True
    assert attributes_seen["distinct_count"] == 3  # "b", 1 (= 1.0), True


def test_references_by_id_and_name() -> None:
    model = ReferenceModel.create()
    model.add_segment("big", "Big spenders", parse_rules(single("totalSpent", "gte", 100)))
    model.add_segment(
        "rest",
        "Rest",
        parse_rules({"conditions": [{"segment": "Big spenders", "operator": "not_in"}]}),
    )
    model.apply(
        [event("u1", properties={"amount": 150}), event("u2", properties={"amount": 5})], NOW
    )
    assert model.members("big", NOW) == {"u1"}
    assert model.members("rest", NOW) == {"u2"}
