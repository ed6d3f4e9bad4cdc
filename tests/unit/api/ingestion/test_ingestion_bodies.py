"""Request bodies: one event, and batches as an object, a bare array or NDJSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from audience_manager.api.ingestion.bodies import (
    MAX_BATCH_EVENTS,
    InvalidEvents,
    MalformedBody,
    TooManyEvents,
    is_ndjson,
    parse_batch,
    parse_event,
)

NOW = 1_767_225_600_000
NDJSON = "application/x-ndjson"


def event(i: int) -> dict[str, Any]:
    return {"userId": f"u{i}", "eventType": "page_view", "properties": {"n": i}}


def ndjson(*items: Any) -> bytes:
    return b"\n".join(json.dumps(item).encode() for item in items)


def test_one_event() -> None:
    parsed = parse_event(json.dumps(event(1)).encode(), NOW)
    assert (parsed.user_id, parsed.event_type, parsed.properties) == ("u1", "page_view", {"n": 1})


@pytest.mark.parametrize("body", [b"", b"  \n", b"{", b"{'a': 1}", b"[1,]", b"nul"])
def test_malformed_json_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_event(body, NOW)
    with pytest.raises(MalformedBody):
        parse_batch(body, "application/json", NOW)


def test_an_invalid_event_lists_its_issues() -> None:
    with pytest.raises(InvalidEvents) as refused:
        parse_event(b'{"userId": "u"}', NOW)
    assert [issue.as_detail() for issue in refused.value.issues] == [
        {"path": "eventType", "message": "is required"}
    ]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps({"events": [event(i) for i in range(3)]}).encode(), "application/json"),
        (json.dumps([event(i) for i in range(3)]).encode(), "application/json"),
        (json.dumps([event(i) for i in range(3)]).encode(), None),
        (ndjson(*[event(i) for i in range(3)]), NDJSON),
        (b"\n" + ndjson(*[event(i) for i in range(3)]) + b"\r\n\n", NDJSON + "; charset=utf-8"),
    ],
    ids=["object", "array", "no content type", "ndjson", "ndjson with blank lines"],
)
def test_batch_forms(body: bytes, content_type: str | None) -> None:
    parsed = parse_batch(body, content_type, NOW)
    assert [e.user_id for e in parsed] == ["u0", "u1", "u2"]
    assert all(e.received_at == NOW for e in parsed)


def test_a_batch_refuses_every_invalid_event_with_index_and_path() -> None:
    events = [event(0), {"userId": "u1"}, event(2), {**event(3), "timestamp": True, "x": 1}]
    with pytest.raises(InvalidEvents) as refused:
        parse_batch(json.dumps({"events": events}).encode(), "application/json", NOW)
    assert [issue.as_detail() for issue in refused.value.issues] == [
        {"index": 1, "path": "events[1].eventType", "message": "is required"},
        {"index": 3, "path": "events[3].x", "message": refused.value.issues[1].message},
        {"index": 3, "path": "events[3].timestamp", "message": refused.value.issues[2].message},
    ]
    assert refused.value.message == "2 of 4 events are invalid; none was accepted"


def test_ndjson_lines_that_are_not_json_are_invalid_events() -> None:
    body = ndjson(event(0)) + b"\n{oops\n" + ndjson(event(2))
    with pytest.raises(InvalidEvents) as refused:
        parse_batch(body, NDJSON, NOW)
    [issue] = refused.value.issues
    assert (issue.index, issue.path) == (1, "events[1]")
    assert issue.message.startswith("this line is not valid JSON")


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (b"[]", "events", "must hold at least one event"),
        (b'{"events": []}', "events", "must hold at least one event"),
        (b"{}", "events", "is required"),
        (b'{"events": null}', "events", "must be an array of events"),
        (b'{"events": {"userId": "u"}}', "events", "must be an array of events"),
        (b'{"events": [], "extra": 1}', "extra", "unknown field"),
        (b'"events"', "", "a batch is"),
        (b"42", "", "a batch is"),
    ],
)
def test_the_batch_itself_must_be_well_formed(body: bytes, path: str, message: str) -> None:
    with pytest.raises(InvalidEvents) as refused:
        parse_batch(body, "application/json", NOW)
    [issue] = refused.value.issues
    assert issue.path == path
    assert message in issue.message
    assert issue.index is None


def test_an_empty_ndjson_batch_is_invalid() -> None:
    with pytest.raises(InvalidEvents):
        parse_batch(b"\n \n", NDJSON, NOW)


@pytest.mark.parametrize("form", ["object", "array", "ndjson"])
def test_batches_hold_at_most_1000_events(form: str) -> None:
    events = [event(i) for i in range(MAX_BATCH_EVENTS + 1)]
    body = {
        "object": json.dumps({"events": events}).encode(),
        "array": json.dumps(events).encode(),
        "ndjson": ndjson(*events),
    }[form]
    with pytest.raises(TooManyEvents, match="at most 1000 events, this one has 1001"):
        parse_batch(body, NDJSON if form == "ndjson" else "application/json", NOW)
    assert len(parse_batch(json.dumps(events[:MAX_BATCH_EVENTS]).encode(), None, NOW)) == 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/x-ndjson", True),
        ("Application/X-NDJSON; charset=utf-8", True),
        ("application/jsonl", True),
        ("application/json", False),
        ("text/plain", False),
        ("", False),
        (None, False),
    ],
)
def test_ndjson_is_chosen_by_content_type(header: str | None, expected: bool) -> None:
    assert is_ndjson(header) is expected


def test_json_nested_beyond_the_decoder_is_invalid_not_an_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    nested = b'{"userId": "u", "eventType": "e", "properties": {"a": ' + deep + b"}}"
    with pytest.raises(InvalidEvents) as refused:
        parse_event(nested, NOW)
    assert "nests far deeper" in refused.value.issues[0].message
    with pytest.raises(InvalidEvents):
        parse_batch(b"[" + nested + b"]", None, NOW)
    with pytest.raises(InvalidEvents) as refused:
        parse_batch(ndjson(event(0)) + b"\n" + nested, NDJSON, NOW)
    [issue] = refused.value.issues
    assert (issue.index, issue.path) == (1, "events[1]")
