"""The event rules as msgspec types: a valid body decodes, checked, straight to log records.

Decoding a batch to plain dicts and checking each event in Python (``validation``) costs
several times more than decoding it with msgspec into typed structs whose field types
carry the rules: msgspec checks them in C while it parses, with no intermediate dict per
event. Here, ``userId`` and ``messageId`` lengths, the ``eventType`` length, unknown
fields, value types and the nesting depth of ``properties`` and ``traits`` (spelled out
level by level as types) are checked during decoding; what types cannot say (the
characters of ``eventType``, the range of event times, ISO-8601 parsing, the encoded
size of objects) is checked right after, once per batch or per event, without any call
per event when the event has nothing unusual.

These functions never word a refusal: when anything is wrong, or merely unusual, they
return ``None`` and the caller runs ``bodies``' exact checks, which accept or refuse the
body and say why. So they accept only what ``validation`` accepts, and their records
hold the very bytes ``codec.encode_event`` writes for the same event: :class:`TypedEvent`
has the fields of ``WireEvent`` in the same order, omitted alike.
"""

from __future__ import annotations

import functools
import re
from operator import attrgetter
from typing import Annotated, TypeAlias

import msgspec
from msgspec import Meta

from audience_manager.api.ingestion.validation import (
    MAX_FUTURE_MS,
    MAX_ID_LENGTH,
    MAX_OBJECT_BYTES,
    MIN_TIMESTAMP_MS,
)
from audience_manager.rules.timeparse import parse_timestamp_ms

__all__ = ["MAX_EVENTS", "TypedEvent", "batch_records", "event_record"]

MAX_EVENTS = 1000
"""Most events in one batch (``bodies.MAX_BATCH_EVENTS``; a larger one goes to ``bodies``)."""

_Scalar: TypeAlias = bool | int | float | str | None
# A value inside an object at level n (``properties`` itself is level 1): a scalar or a
# container at level n, whose own values sit at level n + 1. Level 5 holds only scalars.
_AtLevel5: TypeAlias = _Scalar | dict[str, _Scalar] | list[_Scalar]
_AtLevel4: TypeAlias = _Scalar | dict[str, _AtLevel5] | list[_AtLevel5]
_AtLevel3: TypeAlias = _Scalar | dict[str, _AtLevel4] | list[_AtLevel4]
_AtLevel2: TypeAlias = _Scalar | dict[str, _AtLevel3] | list[_AtLevel3]
_Object: TypeAlias = dict[str, _AtLevel2]
_Id: TypeAlias = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]

# msgspec would check a ``pattern`` with one regex call per event; the characters are
# checked once per distinct type instead (``_event_type_valid``).
_EVENT_TYPE_CHARACTERS = re.compile(r"[A-Za-z0-9_.:-]+")


# gc=False: decoded values never refer back to their struct, so the cyclic collector has
# nothing to find in the thousands a batch creates, and need not track them.
class TypedEvent(
    msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True, gc=False
):
    """An event as a client sends it and, once completed, as the log stores it.

    Its fields are those of ``codec.WireEvent``, in the same order, omitted alike when a
    completed event leaves them at their default, so both encode to the same bytes.
    """

    user_id: _Id
    event_type: Annotated[str, Meta(min_length=1, max_length=64)]
    timestamp: int | str | None = None
    properties: _Object | None = msgspec.field(default_factory=dict)
    traits: _Object | None = None
    message_id: _Id | None = None
    # Set by ingestion, never by a client: no value a client may send meets these bounds.
    received_at: Annotated[int, Meta(ge=1, le=0)] = 0


class _Batch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    events: list[TypedEvent]


_decode_batch = msgspec.json.Decoder(list[TypedEvent] | _Batch).decode
_decode_event = msgspec.json.Decoder(TypedEvent).decode
_encoder = msgspec.json.Encoder()
_encode, _encode_lines = _encoder.encode, _encoder.encode_lines
_user_id = attrgetter("user_id")
_event_type = attrgetter("event_type")


def event_record(body: bytes, received_at: int) -> tuple[str, bytes] | None:
    """The log record ``(userId, value)`` of a valid single event, else ``None``."""
    try:
        event = _decode_event(body)
    except msgspec.DecodeError:
        return None
    if not _completed([event], received_at):
        return None
    value = _encode(event)
    if len(value) > MAX_OBJECT_BYTES and not _sizes_valid(event):
        return None
    return event.user_id, value


def batch_records(body: bytes, ndjson: bool, received_at: int) -> list[tuple[str, bytes]] | None:
    """The log records of a valid batch (JSON or NDJSON), in order, else ``None``."""
    if ndjson:
        # Lines with anything but whitespace, as ``bodies`` splits them.
        lines = list(filter(bytes.strip, body.split(b"\n")))
        if not 0 < len(lines) <= MAX_EVENTS:
            return None
        try:
            events = list(map(_decode_event, lines))
        except msgspec.DecodeError:
            return None
    else:
        try:
            decoded = _decode_batch(body)
        except msgspec.DecodeError:
            return None
        events = decoded.events if isinstance(decoded, _Batch) else decoded
        if not 0 < len(events) <= MAX_EVENTS:
            return None
    if not _completed(events, received_at):
        return None
    # One line per event, split apart: cheaper than an encode call per event. JSON escapes
    # every newline inside strings, so the only ones are the line ends.
    values = _encode_lines(events).split(b"\n")
    values.pop()  # the empty rest after the last line end
    # An object is never longer than the record holding it: only long records need a look.
    if max(map(len, values)) > MAX_OBJECT_BYTES and not all(map(_sizes_valid, events)):
        return None
    return list(zip(map(_user_id, events), values, strict=True))


def _completed(events: list[TypedEvent], received_at: int) -> bool:
    """Check what the types cannot and complete the events as ``validation`` does."""
    if not all(map(_event_type_valid, set(map(_event_type, events)))):
        return False
    latest = received_at + MAX_FUTURE_MS
    for event in events:
        event.received_at = received_at
        timestamp = event.timestamp
        if timestamp is None:
            event.timestamp = received_at
        elif isinstance(timestamp, int):  # never a bool: the type refuses them
            if not MIN_TIMESTAMP_MS <= timestamp <= latest:
                return False
        else:
            millis = _millis(timestamp)
            if millis is None or not MIN_TIMESTAMP_MS <= millis <= latest:
                return False
            event.timestamp = millis
        if event.properties is None:
            event.properties = {}
    return True


def _millis(text: str) -> int | None:
    try:
        return parse_timestamp_ms(text)
    except ValueError:
        return None


# Clients send a handful of event types over and over: each is matched once.
@functools.lru_cache(maxsize=1024)
def _event_type_valid(kind: str) -> bool:
    return _EVENT_TYPE_CHARACTERS.fullmatch(kind) is not None


def _sizes_valid(event: TypedEvent) -> bool:
    return all(
        value is None or len(_encode(value)) <= MAX_OBJECT_BYTES
        for value in (event.properties, event.traits)
    )
