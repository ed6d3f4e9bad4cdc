"""The one-pass typed decoding accepts only what the exact checks accept, with the same bytes.

``typed`` either returns the records ``bodies.parse_batch`` and ``codec.encode_event``
would give, or ``None`` (then the exact checks decide). Every case here is compared with
that path; valid everyday events must not fall back to it.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from event_bodies import BASE, NOW, nested
from hypothesis import given, settings
from hypothesis import strategies as st

from audience_manager.api.ingestion import typed
from audience_manager.api.ingestion.bodies import (
    BodyError,
    InvalidEvents,
    MalformedBody,
    TooManyEvents,
    batch_records,
    event_records,
    parse_batch,
    parse_event,
)
from audience_manager.api.ingestion.validation import (
    MAX_FUTURE_MS,
    MAX_OBJECT_BYTES,
    MIN_TIMESTAMP_MS,
)
from audience_manager.processor.codec import WireEvent, encode_event

JSON = "application/json"
NDJSON = "application/x-ndjson"


def exact_batch(body: bytes, content_type: str | None) -> list[tuple[str, bytes]] | None:
    """What the exact checks make of a batch body: its records, or None if refused."""
    try:
        return [(e.user_id, encode_event(e)) for e in parse_batch(body, content_type, NOW)]
    except BodyError:
        return None


def exact_event(body: bytes) -> tuple[str, bytes] | None:
    try:
        event = parse_event(body, NOW)
    except BodyError:
        return None
    return event.user_id, encode_event(event)


def dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def test_typed_events_have_the_fields_of_wire_events_in_order() -> None:
    typed_fields = msgspec.structs.fields(typed.TypedEvent)
    wire_fields = msgspec.structs.fields(WireEvent)
    assert [f.encode_name for f in typed_fields] == [f.encode_name for f in wire_fields][:-1]
    assert wire_fields[-1].name == "command"
    # Fields a completed event may leave at their default are omitted alike; the others
    # (ids, event time, arrival time) are always set, to values no default equals.
    for mine, theirs in zip(typed_fields, wire_fields, strict=False):
        if mine.name in {"properties", "traits", "message_id"}:
            assert (mine.default, mine.default_factory) == (theirs.default, theirs.default_factory)


VALID: list[tuple[str, dict[str, Any]]] = [
    ("the seed event", {"properties": {"amount": 1500, "category": "electronics"}}),
    ("no properties", {}),
    ("empty properties", {"properties": {}}),
    ("null properties", {"properties": None}),
    ("user id of 256 chars", {"userId": "é" * 256}),
    ("user id of astral chars", {"userId": "😀" * 256}),
    ("user id of 1 char", {"userId": "u"}),
    ("event type of 64 chars", {"eventType": "a" * 64}),
    ("event type punctuation", {"eventType": "Order.Completed:v2_x-y"}),
    ("epoch ms", {"timestamp": NOW - 5}),
    ("ISO with Z", {"timestamp": "2025-06-01T12:30:00Z"}),
    ("ISO with offset", {"timestamp": "2025-06-01T14:30:00+02:00"}),
    ("ISO without zone", {"timestamp": "2025-06-01T12:30:00"}),
    ("ISO date", {"timestamp": "2025-06-01"}),
    ("ISO fraction", {"timestamp": "2025-06-01T12:30:00.1239Z"}),
    ("2000-01-01 exactly", {"timestamp": MIN_TIMESTAMP_MS}),
    ("1 day ahead exactly", {"timestamp": NOW + MAX_FUTURE_MS}),
    ("null timestamp", {"timestamp": None}),
    ("traits", {"traits": {"plan": "pro", "old": None}}),
    ("empty traits", {"traits": {}}),
    ("null traits", {"traits": None}),
    ("message id", {"messageId": "m" * 256}),
    ("null message id", {"messageId": None}),
    ("properties 5 levels deep", {"properties": nested(5)}),
    ("traits 5 levels deep", {"traits": nested(5)}),
    ("arrays count as levels", {"properties": {"a": [[[{"b": 1}]]]}}),
    ("every kind of value", {"properties": {"n": None, "b": True, "i": -3, "f": 2.5, "s": "x"}}),
    ("big integers", {"properties": {"big": 123456789012345678901234567890, "neg": -(2**70)}}),
    ("floats", {"properties": {"a": 1e300, "b": -0.0, "c": 1.0, "d": 5e-324}}),
    ("escapes", {"properties": {'quote"': "back\\slash\n\t\u0001", "é": "\u2028😀"}}),
    ("properties at the size limit", {"properties": {"p": "x" * (MAX_OBJECT_BYTES - 8)}}),
    ("traits at the size limit", {"traits": {"t": "y" * (MAX_OBJECT_BYTES - 8)}}),
    ("a large event", {"properties": {"p": "x" * 30_000}, "traits": {"t": "y" * 30_000}}),
]


@pytest.mark.parametrize("change", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_events_take_the_typed_path_with_the_same_bytes(change: dict[str, Any]) -> None:
    event = {**BASE, **change}
    body = dump(event)
    record = typed.event_record(body, NOW)
    assert record is not None
    assert record == exact_event(body)
    batch = dump({"events": [event, {**event, "userId": "other"}]})
    records = typed.batch_records(batch, False, NOW)
    assert records is not None
    assert records == exact_batch(batch, JSON)
    lines = dump(event) + b"\n" + dump(event)
    assert typed.batch_records(lines, True, NOW) == exact_batch(lines, NDJSON)


INVALID: list[tuple[str, Any]] = [
    ("not an object", ["x"]),
    ("missing user id", {"eventType": "a"}),
    ("empty user id", {**BASE, "userId": ""}),
    ("long user id", {**BASE, "userId": "u" * 257}),
    ("long astral user id", {**BASE, "userId": "😀" * 257}),
    ("numeric user id", {**BASE, "userId": 42}),
    ("null user id", {**BASE, "userId": None}),
    ("missing event type", {"userId": "u"}),
    ("empty event type", {**BASE, "eventType": ""}),
    ("long event type", {**BASE, "eventType": "a" * 65}),
    ("space in event type", {**BASE, "eventType": "page view"}),
    ("newline after event type", {**BASE, "eventType": "purchase\n"}),
    ("non-ASCII event type", {**BASE, "eventType": "café"}),
    ("non-ASCII digit in event type", {**BASE, "eventType": "a\u0661"}),
    ("event type list", {**BASE, "eventType": ["a"]}),
    ("properties list", {**BASE, "properties": [1]}),
    ("properties string", {**BASE, "properties": "{}"}),
    ("properties 6 deep", {**BASE, "properties": nested(6)}),
    ("arrays nest too", {**BASE, "properties": {"a": [[[[{"b": 1}]]]]}}),
    ("properties too big", {**BASE, "properties": {"p": "x" * MAX_OBJECT_BYTES}}),
    ("traits list", {**BASE, "traits": []}),
    ("traits 6 deep", {**BASE, "traits": nested(6)}),
    ("traits too big", {**BASE, "traits": {"t": "y" * MAX_OBJECT_BYTES}}),
    ("boolean timestamp", {**BASE, "timestamp": True}),
    ("float timestamp", {**BASE, "timestamp": 1.7e12}),
    ("whole float timestamp", {**BASE, "timestamp": float(NOW)}),
    ("object timestamp", {**BASE, "timestamp": {}}),
    ("negative timestamp", {**BASE, "timestamp": -1}),
    ("epoch seconds", {**BASE, "timestamp": 1_767_225_600}),
    ("before 2000", {**BASE, "timestamp": MIN_TIMESTAMP_MS - 1}),
    ("ISO before 2000", {**BASE, "timestamp": "1999-12-31T23:59:59Z"}),
    ("far future", {**BASE, "timestamp": "9999-12-31"}),
    ("just over a day ahead", {**BASE, "timestamp": NOW + MAX_FUTURE_MS + 1}),
    ("huge timestamp", {**BASE, "timestamp": 10**30}),
    ("not a date", {**BASE, "timestamp": "yesterday"}),
    ("digits string", {**BASE, "timestamp": "1767225600000"}),
    ("empty message id", {**BASE, "messageId": ""}),
    ("long message id", {**BASE, "messageId": "m" * 257}),
    ("numeric message id", {**BASE, "messageId": 7}),
    ("unknown field", {**BASE, "user_id": "u"}),
    ("received at from the client", {**BASE, "receivedAt": NOW}),
    ("zero received at from the client", {**BASE, "receivedAt": 0}),
    ("command from the client", {**BASE, "command": "erase"}),
]


@pytest.mark.parametrize("event", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_events_are_left_to_the_exact_checks(event: Any) -> None:
    body = dump(event)
    assert exact_event(body) is None
    assert typed.event_record(body, NOW) is None
    batch = dump([BASE, event])
    assert exact_batch(batch, JSON) is None
    assert typed.batch_records(batch, False, NOW) is None
    assert typed.batch_records(dump(BASE) + b"\n" + body, True, NOW) is None


@pytest.mark.parametrize(
    ("body", "ndjson"),
    [
        (b"", False),
        (b"[]", False),
        (b"{}", False),
        (b'{"events": []}', False),
        (b'{"events": null}', False),
        (b'{"events": [], "extra": 1}', False),
        (b'{"events": [{"userId": "u", "eventType": "e"}], "extra": 1}', False),
        (b'"events"', False),
        (b"[{", False),
        (b"\n \n", True),
        (b'{"userId": "u", "eventType": "e"} {"userId": "u", "eventType": "e"}', True),
        (b'{"userId": "u",\n"eventType": "e"}', True),
        (b'{"userId": "u", "eventType": "e"}\n{oops', True),
    ],
)
def test_malformed_batches_are_left_to_the_exact_checks(body: bytes, ndjson: bool) -> None:
    assert exact_batch(body, NDJSON if ndjson else JSON) is None
    assert typed.batch_records(body, ndjson, NOW) is None


def test_batches_of_more_than_1000_events_are_left_to_the_exact_checks() -> None:
    events = [{**BASE, "userId": f"u{i}"} for i in range(1001)]
    assert typed.batch_records(dump(events), False, NOW) is None
    lines = b"\n".join(dump(event) for event in events)
    assert typed.batch_records(lines, True, NOW) is None
    assert typed.batch_records(dump(events[:1000]), False, NOW) == exact_batch(
        dump(events[:1000]), JSON
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"userId": "a", "userId": "b", "eventType": "e"}',
        b'{"userId": "a", "eventType": "e", "properties": {"k": 1, "j": 2, "k": 3}}',
        b'{"userId": "a", "eventType": "e", "properties": null, "properties": {"k": 1}}',
        b'{"userId": "\\u00e9\\ud83d\\ude00", "eventType": "e", "properties": {"\\/": "\\/"}}',
        b' {\n"userId" : "a" ,\t"eventType":"e", "properties" : { "n" : 1E2, "m": 0.10 } }\r\n',
    ],
    ids=["repeated field", "repeated key", "null then object", "escapes", "whitespace"],
)
def test_unusual_spellings_give_the_same_bytes(body: bytes) -> None:
    record = typed.event_record(body, NOW)
    assert record is not None
    assert record == exact_event(body)
    batch = b"[" + body + b"," + body + b"]"
    assert typed.batch_records(batch, False, NOW) == exact_batch(batch, JSON)
    assert typed.batch_records(body + b"\n\n" + body, True, NOW) == exact_batch(
        body + b"\n\n" + body, NDJSON
    )


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
_events = st.fixed_dictionaries(
    {},
    optional={
        "userId": st.text(max_size=3) | st.sampled_from(["u", "é" * 257]) | _json_scalars,
        "eventType": st.sampled_from(["purchase", "a.b:c-d_e", "", "a b", "é", "x" * 65])
        | _json_scalars,
        "timestamp": st.sampled_from([NOW, MIN_TIMESTAMP_MS - 1, "2025-06-01", "x", 1.5])
        | _json_scalars,
        "properties": _json_values,
        "traits": _json_values,
        "messageId": st.text(max_size=3) | _json_scalars,
        "other": st.integers(),
    },
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_events, min_size=1, max_size=4))
def test_typed_decoding_agrees_with_the_exact_checks(events: list[dict[str, Any]]) -> None:
    batch = dump({"events": events})
    records = typed.batch_records(batch, False, NOW)
    exact = exact_batch(batch, JSON)
    assert records is None or records == exact
    for event in events:
        body = dump(event)
        record = typed.event_record(body, NOW)
        assert record is None or record == exact_event(body)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _json_values, max_size=4))
def test_valid_properties_of_any_shape_take_the_typed_path(properties: dict[str, Any]) -> None:
    body = dump({**BASE, "properties": properties})
    exact = exact_event(body)
    record = typed.event_record(body, NOW)
    assert record == exact or (exact is None and record is None)


def test_bodies_answer_from_the_typed_path_or_refuse_as_before() -> None:
    body = dump({"events": [BASE, {**BASE, "userId": "other"}]})
    assert batch_records(body, JSON, NOW) == exact_batch(body, JSON)
    assert event_records(dump(BASE), NOW) == [exact_event(dump(BASE))]
    with pytest.raises(InvalidEvents) as refused:
        batch_records(dump([BASE, {"userId": "u"}, {**BASE, "x": 1}]), JSON, NOW)
    assert refused.value.message == "2 of 3 events are invalid; none was accepted"
    assert [issue.as_detail() for issue in refused.value.issues] == [
        {"index": 1, "path": "events[1].eventType", "message": "is required"},
        {"index": 2, "path": "events[2].x", "message": refused.value.issues[1].message},
    ]
    with pytest.raises(InvalidEvents) as refused:
        event_records(b'{"userId": "u"}', NOW)
    assert [issue.as_detail() for issue in refused.value.issues] == [
        {"path": "eventType", "message": "is required"}
    ]
    with pytest.raises(MalformedBody):
        batch_records(b"{", JSON, NOW)
    with pytest.raises(MalformedBody):
        event_records(b"", NOW)
    with pytest.raises(TooManyEvents):
        batch_records(dump([BASE] * 1001), None, NOW)
