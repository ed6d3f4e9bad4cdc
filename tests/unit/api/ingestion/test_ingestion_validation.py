"""Every rule an event must meet, with the path and message of each refusal."""

from __future__ import annotations

from typing import Any

import pytest
from event_bodies import BASE, NOW, nested

from audience_manager.api.ingestion.validation import (
    MAX_FUTURE_MS,
    MAX_OBJECT_BYTES,
    MIN_TIMESTAMP_MS,
    Issue,
    validate_event,
)
from audience_manager.processor.codec import WireEvent


def check(event: dict[str, Any], **kwargs: Any) -> tuple[WireEvent | None, list[Issue]]:
    return validate_event(event, NOW, **kwargs)


VALID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("the seed event", {"properties": {"amount": 1500, "category": "electronics"}}, {}),
    ("no properties", {}, {"properties": {}}),
    ("null properties", {"properties": None}, {"properties": {}}),
    ("user id of 1 char", {"userId": "u"}, {"user_id": "u"}),
    ("user id of 256 chars", {"userId": "é" * 256}, {"user_id": "é" * 256}),
    ("event type of 64 chars", {"eventType": "a" * 64}, {"event_type": "a" * 64}),
    ("event type punctuation", {"eventType": "Order.Completed:v2_x-y"}, {}),
    ("epoch ms", {"timestamp": NOW - 5}, {"timestamp": NOW - 5}),
    ("ISO with Z", {"timestamp": "2025-06-01T12:30:00Z"}, {"timestamp": 1_748_781_000_000}),
    (
        "ISO with offset",
        {"timestamp": "2025-06-01T14:30:00+02:00"},
        {"timestamp": 1_748_781_000_000},
    ),
    (
        "ISO without zone is UTC",
        {"timestamp": "2025-06-01T12:30:00"},
        {"timestamp": 1_748_781_000_000},
    ),
    ("ISO date is midnight UTC", {"timestamp": "2025-06-01"}, {"timestamp": 1_748_736_000_000}),
    (
        "ISO fraction truncated",
        {"timestamp": "2025-06-01T12:30:00.1239Z"},
        {"timestamp": 1_748_781_000_123},
    ),
    ("2000-01-01 exactly", {"timestamp": MIN_TIMESTAMP_MS}, {"timestamp": MIN_TIMESTAMP_MS}),
    ("1 day ahead exactly", {"timestamp": NOW + MAX_FUTURE_MS}, {"timestamp": NOW + MAX_FUTURE_MS}),
    ("null timestamp is arrival", {"timestamp": None}, {"timestamp": NOW}),
    ("traits", {"traits": {"plan": "pro", "old": None}}, {"traits": {"plan": "pro", "old": None}}),
    ("null traits", {"traits": None}, {"traits": None}),
    ("message id", {"messageId": "m" * 256}, {"message_id": "m" * 256}),
    ("null message id", {"messageId": None}, {"message_id": None}),
    ("properties 5 levels deep", {"properties": nested(5)}, {}),
    ("arrays count as levels", {"properties": {"a": [[[{"b": 1}]]]}}, {}),
    ("properties at the size limit", {"properties": {"p": "x" * (MAX_OBJECT_BYTES - 8)}}, {}),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_events_become_wire_events(change: dict[str, Any], expected: dict[str, Any]) -> None:
    event, issues = check({**BASE, **change})
    assert issues == []
    assert event is not None
    assert event.received_at == NOW
    assert event.user_id == change.get("userId", BASE["userId"])
    for name, value in expected.items():
        assert getattr(event, name) == value, name


def test_the_timestamp_defaults_to_the_arrival_time() -> None:
    event, _ = check(BASE)
    assert event is not None
    assert (event.timestamp, event.received_at, event.properties, event.traits) == (
        NOW,
        NOW,
        {},
        None,
    )


INVALID: list[tuple[str, Any, str, str]] = [
    ("not an object", ["x"], "", "an event must be a JSON object"),
    ("missing user id", {"eventType": "a"}, "userId", "is required"),
    ("empty user id", {**BASE, "userId": ""}, "userId", "must not be empty"),
    ("long user id", {**BASE, "userId": "u" * 257}, "userId", "at most 256 characters, not 257"),
    ("numeric user id", {**BASE, "userId": 42}, "userId", "must be a string, not a number"),
    ("null user id", {**BASE, "userId": None}, "userId", "must be a string, not null"),
    ("missing event type", {"userId": "u"}, "eventType", "is required"),
    ("empty event type", {**BASE, "eventType": ""}, "eventType", "must not be empty"),
    ("long event type", {**BASE, "eventType": "a" * 65}, "eventType", "at most 64 characters"),
    ("space in event type", {**BASE, "eventType": "page view"}, "eventType", "may only contain"),
    ("slash in event type", {**BASE, "eventType": "a/b"}, "eventType", "may only contain"),
    ("non-ASCII event type", {**BASE, "eventType": "café"}, "eventType", "may only contain"),
    ("event type list", {**BASE, "eventType": ["a"]}, "eventType", "not an array"),
    ("properties list", {**BASE, "properties": [1]}, "properties", "must be a JSON object"),
    ("properties string", {**BASE, "properties": "{}"}, "properties", "must be a JSON object"),
    ("properties 6 deep", {**BASE, "properties": nested(6)}, "properties", "deeper than 5"),
    (
        "arrays nest too",
        {**BASE, "properties": {"a": [[[[{"b": 1}]]]]}},
        "properties",
        "deeper than 5",
    ),
    (
        "properties too big",
        {**BASE, "properties": {"p": "x" * MAX_OBJECT_BYTES}},
        "properties",
        "at most 32768",
    ),
    ("traits list", {**BASE, "traits": []}, "traits", "must be a JSON object or null"),
    ("traits 6 deep", {**BASE, "traits": nested(6)}, "traits", "deeper than 5"),
    ("traits too big", {**BASE, "traits": {"t": "y" * MAX_OBJECT_BYTES}}, "traits", "at most"),
    ("boolean timestamp", {**BASE, "timestamp": True}, "timestamp", "not a boolean"),
    ("float timestamp", {**BASE, "timestamp": 1.7e12}, "timestamp", "not a number"),
    ("object timestamp", {**BASE, "timestamp": {}}, "timestamp", "not an object"),
    ("negative timestamp", {**BASE, "timestamp": -1}, "timestamp", "must not be negative"),
    ("epoch seconds", {**BASE, "timestamp": 1_767_225_600}, "timestamp", "is it in seconds?"),
    ("before 2000", {**BASE, "timestamp": MIN_TIMESTAMP_MS - 1}, "timestamp", "before 2000"),
    ("ISO before 2000", {**BASE, "timestamp": "1999-12-31T23:59:59Z"}, "timestamp", "before 2000"),
    ("year 1", {**BASE, "timestamp": "0001-01-01"}, "timestamp", "before 2000"),
    ("far future", {**BASE, "timestamp": "9999-12-31"}, "timestamp", "1 day in the future"),
    (
        "just over a day ahead",
        {**BASE, "timestamp": NOW + MAX_FUTURE_MS + 1},
        "timestamp",
        "1 day in the future",
    ),
    ("not a date", {**BASE, "timestamp": "yesterday"}, "timestamp", "ISO-8601"),
    ("basic ISO form", {**BASE, "timestamp": "20250601T123000Z"}, "timestamp", "ISO-8601"),
    ("impossible date", {**BASE, "timestamp": "2025-02-30"}, "timestamp", "ISO-8601"),
    ("digits string", {**BASE, "timestamp": "1767225600000"}, "timestamp", "ISO-8601"),
    ("empty message id", {**BASE, "messageId": ""}, "messageId", "must not be empty"),
    ("long message id", {**BASE, "messageId": "m" * 257}, "messageId", "at most 256"),
    ("numeric message id", {**BASE, "messageId": 7}, "messageId", "must be a string"),
    ("unknown field", {**BASE, "user_id": "u"}, "user_id", "unknown field"),
    ("snake-case event", {**BASE, "event": "x"}, "event", "unknown field"),
]


@pytest.mark.parametrize(
    ("event", "path", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_events_name_the_path(event: Any, path: str, message: str) -> None:
    wire, issues = check(event)
    assert wire is None
    assert [issue.path for issue in issues] == [path]
    assert message in issues[0].message
    assert issues[0].index is None


@pytest.mark.parametrize(("event", "path", "message"), [c[1:] for c in INVALID[:12]])
def test_paths_in_a_batch_carry_the_prefix_and_index(event: Any, path: str, message: str) -> None:
    _, issues = check(event, index=3)
    expected = f"events[3].{path}" if path else "events[3]"
    assert [(issue.path, issue.index) for issue in issues] == [(expected, 3)]
    assert issues[0].as_detail() == {"index": 3, "path": expected, "message": issues[0].message}


def test_every_problem_of_an_event_is_reported() -> None:
    _, issues = check({"userId": "", "eventType": "a b", "timestamp": False, "extra": 1})
    assert [issue.path for issue in issues] == ["extra", "userId", "eventType", "timestamp"]


def test_problems_per_event_are_capped() -> None:
    _, issues = check({**BASE, **{f"x{i}": i for i in range(1000)}})
    assert len(issues) == 20


def test_a_single_events_detail_has_no_index() -> None:
    _, issues = check({"userId": "u"})
    assert issues[0].as_detail() == {"path": "eventType", "message": "is required"}
