"""Request bodies of the event routes, decoded and validated into log records.

``POST /api/events`` takes one JSON event. ``POST /api/events/batch`` takes 1 to
:data:`MAX_BATCH_EVENTS` events as ``{"events": [...]}``, as a bare JSON array, or as
NDJSON (``application/x-ndjson``: one event per line, blank lines ignored). A batch is
all or nothing: one invalid event refuses the whole batch, and every problem is reported
with the event's index and path. Paths name batch events ``events[i]`` whatever the form,
``i`` counting from 0 (for NDJSON: the i-th non-blank line).

``event_records`` and ``batch_records`` give the log records of an accepted body: valid
bodies take the one-pass typed decoding of ``typed``; any other goes through
``parse_event`` / ``parse_batch``, which decide and say why they refuse it.

Exceptions::

    BodyError           the body cannot be accepted
    ├── BodyTooLarge    more bytes than the route takes
    ├── MalformedBody   not JSON at all
    ├── TooManyEvents   a batch of more than MAX_BATCH_EVENTS events
    └── InvalidEvents   JSON, but events (or the batch around them) break the rules
"""

from __future__ import annotations

from typing import Any

import msgspec

from audience_manager.api.ingestion import typed
from audience_manager.api.ingestion.validation import Issue, validate_event
from audience_manager.processor.codec import WireEvent, encode_event

__all__ = [
    "MAX_BATCH_EVENTS",
    "NDJSON_TYPES",
    "BodyError",
    "BodyTooLarge",
    "InvalidEvents",
    "MalformedBody",
    "TooManyEvents",
    "batch_records",
    "event_records",
    "is_ndjson",
    "parse_batch",
    "parse_event",
]

MAX_BATCH_EVENTS = typed.MAX_EVENTS
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
_BATCH_SHAPE = 'a batch is {"events": [...]}, a JSON array of events, or NDJSON'

_TOO_DEEP = "nests far deeper than any event may (5 levels)"
_decode = msgspec.json.Decoder().decode


class BodyError(Exception):
    """The request body cannot be accepted."""

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues or []


class BodyTooLarge(BodyError):
    """The body is larger than the route accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds {limit} bytes")


class MalformedBody(BodyError):
    """The body is not valid JSON."""


class TooManyEvents(BodyError):
    """A batch holds more events than one request may carry."""


class InvalidEvents(BodyError):
    """The body is JSON, but what it holds breaks the rules; ``issues`` say where."""


def is_ndjson(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header announces newline-delimited JSON."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in NDJSON_TYPES


def event_records(body: bytes, received_at: int) -> list[tuple[str, bytes]]:
    """The log record ``(userId, value)`` of a ``POST /api/events`` body, in a list."""
    record = typed.event_record(body, received_at)
    if record is None:
        event = parse_event(body, received_at)
        record = (event.user_id, encode_event(event))
    return [record]


def batch_records(
    body: bytes, content_type: str | None, received_at: int
) -> list[tuple[str, bytes]]:
    """The log records of a ``POST /api/events/batch`` body, all valid, in order."""
    records = typed.batch_records(body, is_ndjson(content_type), received_at)
    if records is None:
        events = parse_batch(body, content_type, received_at)
        records = [(event.user_id, encode_event(event)) for event in events]
    return records


def parse_event(body: bytes, received_at: int) -> WireEvent:
    """The one event of a ``POST /api/events`` body, arrived at ``received_at`` (ms)."""
    raw = _decode_json(body)
    event, issues = validate_event(raw, received_at)
    if event is None:
        raise InvalidEvents("the event is invalid", issues)
    return event


def parse_batch(body: bytes, content_type: str | None, received_at: int) -> list[WireEvent]:
    """The events of a ``POST /api/events/batch`` body, all valid, in order."""
    raws = _ndjson_events(body) if is_ndjson(content_type) else _json_events(body)
    events: list[WireEvent] = []
    issues: list[Issue] = []
    for index, raw in enumerate(raws):
        if type(raw) is _BadLine:
            issues.append(Issue(f"events[{index}]", raw.message, index))
            continue
        event, problems = validate_event(raw, received_at, index=index)
        if event is None:
            issues.extend(problems)
        else:
            events.append(event)
    if issues:
        invalid = len({issue.index for issue in issues})
        verb = "is" if invalid == 1 else "are"
        raise InvalidEvents(
            f"{invalid} of {len(raws)} events {verb} invalid; none was accepted", issues
        )
    return events


class _BadLine:
    """An NDJSON line that is not JSON (reported against its index, not as a 400)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _decode_json(body: bytes) -> Any:
    if not body or body.isspace():
        raise MalformedBody("the request body is empty; it must be JSON")
    try:
        return _decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvents("the body is invalid", [Issue("", _TOO_DEEP)]) from None


def _json_events(body: bytes) -> list[Any]:
    raw = _decode_json(body)
    if type(raw) is list:
        events = raw
    elif type(raw) is dict:
        unknown = [key for key in raw if key != "events"]
        if unknown:
            issues = [Issue(key, f"unknown field; {_BATCH_SHAPE}") for key in unknown]
            raise InvalidEvents("the batch is invalid", issues)
        found = raw.get("events")
        if type(found) is not list:
            problem = "is required" if "events" not in raw else "must be an array of events"
            raise InvalidEvents("the batch is invalid", [Issue("events", problem)])
        events = found
    else:
        raise InvalidEvents("the batch is invalid", [Issue("", _BATCH_SHAPE)])
    _check_count(len(events))
    return events


def _ndjson_events(body: bytes) -> list[Any]:
    lines = [line for line in body.split(b"\n") if line.strip()]
    _check_count(len(lines))
    events: list[Any] = []
    for line in lines:
        try:
            events.append(_decode(line))
        except msgspec.DecodeError as exc:
            events.append(_BadLine(f"this line is not valid JSON: {exc}"))
        except RecursionError:
            events.append(_BadLine(_TOO_DEEP))
    return events


def _check_count(count: int) -> None:
    if count == 0:
        raise InvalidEvents("the batch is empty", [Issue("events", "must hold at least one event")])
    if count > MAX_BATCH_EVENTS:
        raise TooManyEvents(
            f"a batch holds at most {MAX_BATCH_EVENTS} events, this one has {count}; "
            "split it into several requests"
        )
