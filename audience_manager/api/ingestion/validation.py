"""The rules an incoming event must meet (PRODUCT §2), checked by hand for speed.

Events arrive as JSON already decoded to plain Python values. :func:`validate_event`
checks one of them and either builds the :class:`WireEvent` the log stores (its event
time resolved, ``receivedAt`` set) or returns every problem it found, each with the JSON
path of the offending value (``eventType``, ``events[3].timestamp``).

The rules:

- ``userId``: a string of 1-256 characters; required.
- ``eventType``: matches ``[A-Za-z0-9_.:-]{1,64}``; required.
- ``properties``: a JSON object, ``{}`` when absent or null.
- ``traits``: a JSON object or null.
- ``properties`` and ``traits`` nest at most 5 levels deep (the object itself is level 1,
  each object or array inside it one more) and take at most 32 KiB as compact JSON.
- ``timestamp``: an ISO-8601 date or date-time (no zone means UTC) or an integer of epoch
  milliseconds, between 2000-01-01 and one day after arrival; the arrival time when
  absent or null.
- ``messageId``: a string of 1-256 characters, or absent or null.
- No other fields.

``typed`` states the same rules as msgspec types, to take valid bodies in one pass; what it
does not accept comes here. A change to the rules belongs in both (``typed``'s tests
compare the two).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from audience_manager.processor.codec import WireEvent
from audience_manager.rules.timeparse import parse_timestamp_ms

__all__ = [
    "EVENT_FIELDS",
    "MAX_DEPTH",
    "MAX_FUTURE_MS",
    "MAX_ID_LENGTH",
    "MAX_OBJECT_BYTES",
    "MIN_TIMESTAMP_MS",
    "Issue",
    "validate_event",
]

MAX_ID_LENGTH = 256
MAX_DEPTH = 5
MAX_OBJECT_BYTES = 32 * 1024
MIN_TIMESTAMP_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: earlier event times are refused as mistakes (epoch seconds?)."""
MAX_FUTURE_MS = 86_400_000
"""How far past its arrival an event's time may lie (clock skew, time zones)."""
EVENT_FIELDS = frozenset({"userId", "eventType", "properties", "timestamp", "traits", "messageId"})
# At most this many problems are listed per event (an object with thousands of unknown
# fields would otherwise make an answer far larger than the request).
_MAX_ISSUES = 20

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_encode = msgspec.json.encode
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem: where (a JSON path), what, and which event of a batch (if any)."""

    path: str
    message: str
    index: int | None = None

    def as_detail(self) -> dict[str, Any]:
        """The issue as an item of an error response's ``details``."""
        if self.index is None:
            return {"path": self.path, "message": self.message}
        return {"index": self.index, "path": self.path, "message": self.message}


def validate_event(
    raw: object, received_at: int, *, index: int | None = None
) -> tuple[WireEvent | None, list[Issue]]:
    """Check one decoded event; return it as the log stores it, or its problems.

    ``received_at`` is the arrival time in epoch milliseconds: the default event time and
    the reference for "too far in the future". ``index`` is the event's position in a
    batch (its paths are then ``events[index].field``); ``None`` for a single event.
    Exactly one of the two results is meaningful: the event when the list is empty.
    """
    prefix = "" if index is None else f"events[{index}]"
    if type(raw) is not dict:
        return None, [Issue(prefix, "an event must be a JSON object", index)]
    issues: list[Issue] = []
    if not EVENT_FIELDS.issuperset(raw):
        for key in raw:
            if key not in EVENT_FIELDS:
                issues.append(Issue(_join(prefix, key), _unknown_field(), index))

    user_id = raw.get("userId", _MISSING)
    if type(user_id) is not str or not 0 < len(user_id) <= MAX_ID_LENGTH:
        issues.append(Issue(_join(prefix, "userId"), _id_problem(user_id), index))

    event_type = raw.get("eventType", _MISSING)
    if type(event_type) is not str or _EVENT_TYPE.fullmatch(event_type) is None:
        issues.append(Issue(_join(prefix, "eventType"), _event_type_problem(event_type), index))

    properties = raw.get("properties")
    if properties is None:
        properties = {}
    elif type(properties) is not dict:
        issues.append(Issue(_join(prefix, "properties"), "must be a JSON object", index))
    else:
        problem = _object_problem(properties)
        if problem is not None:
            issues.append(Issue(_join(prefix, "properties"), problem, index))

    traits = raw.get("traits")
    if traits is not None:
        if type(traits) is not dict:
            issues.append(Issue(_join(prefix, "traits"), "must be a JSON object or null", index))
        else:
            problem = _object_problem(traits)
            if problem is not None:
                issues.append(Issue(_join(prefix, "traits"), problem, index))

    timestamp = raw.get("timestamp")
    if timestamp is None:
        timestamp = received_at
    else:
        timestamp, problem = _resolve_timestamp(timestamp, received_at)
        if problem is not None:
            issues.append(Issue(_join(prefix, "timestamp"), problem, index))

    message_id = raw.get("messageId")
    if message_id is not None and (
        type(message_id) is not str or not 0 < len(message_id) <= MAX_ID_LENGTH
    ):
        issues.append(Issue(_join(prefix, "messageId"), _id_problem(message_id), index))

    if issues:
        return None, issues[:_MAX_ISSUES]
    event = WireEvent(
        user_id=user_id,
        event_type=event_type,
        timestamp=timestamp,
        properties=properties,
        traits=traits,
        message_id=message_id,
        received_at=received_at,
    )
    return event, issues


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _unknown_field() -> str:
    return "unknown field; an event has " + ", ".join(sorted(EVENT_FIELDS))


def _kind(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) is int or type(value) is float:
        return "a number"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    if type(value) is dict:
        return "an object"
    return type(value).__name__


def _id_problem(value: object) -> str:
    if value is _MISSING:
        return "is required"
    if type(value) is not str:
        return f"must be a string, not {_kind(value)}"
    if not value:
        return "must not be empty"
    return f"must be at most {MAX_ID_LENGTH} characters, not {len(value)}"


def _event_type_problem(value: object) -> str:
    if value is _MISSING:
        return "is required"
    if type(value) is not str:
        return f"must be a string, not {_kind(value)}"
    if not value:
        return "must not be empty"
    if len(value) > 64:
        return f"must be at most 64 characters, not {len(value)}"
    return "may only contain letters A-Z a-z, digits and _ . : -"


def _object_problem(value: dict[str, Any]) -> str | None:
    """Why a properties or traits object is refused, or None."""
    if _nests_deeper(value, 1):
        return f"nests deeper than {MAX_DEPTH} levels"
    try:
        size = len(_encode(value))
    except (TypeError, ValueError, OverflowError) as exc:  # only from Python callers
        return f"is not encodable as JSON: {exc}"
    if size > MAX_OBJECT_BYTES:
        return f"takes {size} bytes as JSON; at most {MAX_OBJECT_BYTES} are allowed"
    return None


def _nests_deeper(value: dict[str, Any] | list[Any], level: int) -> bool:
    """Whether a container at ``level`` holds containers beyond ``MAX_DEPTH``."""
    children: Iterable[Any] = value.values() if type(value) is dict else value
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and (
            level >= MAX_DEPTH or _nests_deeper(child, level + 1)
        ):
            return True
    return False


def _resolve_timestamp(value: object, received_at: int) -> tuple[int, str | None]:
    """The event time in epoch ms, or why ``value`` cannot be one."""
    if type(value) is int:
        millis = value
        if millis < 0:
            return 0, "must not be negative"
    elif type(value) is str:
        try:
            millis = parse_timestamp_ms(value)
        except ValueError:
            return 0, (
                "must be an ISO-8601 date-time like 2024-03-01T12:00:00Z "
                "or an integer of epoch milliseconds"
            )
    else:
        return 0, (
            f"must be an ISO-8601 string or an integer of epoch milliseconds, not {_kind(value)}"
        )
    if millis < MIN_TIMESTAMP_MS:
        hint = ""
        if type(value) is int and value * 1000 >= MIN_TIMESTAMP_MS:
            hint = " (is it in seconds? send milliseconds)"
        return 0, f"is before 2000-01-01T00:00:00Z{hint}"
    if millis > received_at + MAX_FUTURE_MS:
        return 0, "is more than 1 day in the future"
    return millis, None
