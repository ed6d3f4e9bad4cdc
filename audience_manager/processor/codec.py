"""Records of the ``events`` topic: accepted events and commands, as the processor reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from audience_manager.bus.base import Record
from audience_manager.engine import Event

__all__ = [
    "ERASE",
    "Command",
    "DecodedBatch",
    "WireEvent",
    "dead_letter",
    "decode",
    "encode_erase",
    "encode_event",
]

ERASE = "erase"


class WireEvent(msgspec.Struct, rename="camel", omit_defaults=True):
    """An event as ingestion writes it to the log (or a command, with ``command`` set)."""

    user_id: str
    event_type: str = ""
    timestamp: int = 0
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    traits: dict[str, Any] | None = None
    message_id: str | None = None
    received_at: int = 0
    command: str | None = None


class Command(msgspec.Struct, frozen=True, gc=False):
    """A record that is a command about a user rather than an event."""

    user_id: str
    command: str


@dataclass(slots=True)
class DecodedBatch:
    """The usable items of a poll (events and commands, in log order) and the poisonous
    records (key, dead-letter value). ``plain``: every item is an event without a
    ``messageId``, so there is nothing to tell apart or look up."""

    items: list[Event | Command] = field(default_factory=list)
    poison: list[tuple[str, bytes]] = field(default_factory=list)
    plain: bool = False


_decoder = msgspec.json.Decoder(WireEvent)
_event_decoder = msgspec.json.Decoder(Event)  # fields only ingestion reads are skipped
_encoder = msgspec.json.Encoder()


def encode_event(event: WireEvent) -> bytes:
    """The log value of an accepted event."""
    return _encoder.encode(event)


def encode_erase(user_id: str) -> bytes:
    """The log value of a request to erase everything about a user."""
    return _encoder.encode(WireEvent(user_id=user_id, command=ERASE))


def decode(records: list[Record]) -> DecodedBatch:
    """Decode a poll; records that cannot be events become dead letters with the reason."""
    batch = DecodedBatch()
    values = [record.value for record in records]
    # The usual poll holds events alone: one look over all of them, one call per value.
    joined = b"\n".join(values)
    if b'"command"' not in joined:
        try:
            batch.items = list(map(_event_decoder.decode, values))
        except msgspec.DecodeError:
            pass  # decoded one by one below, for the reasons
        else:
            batch.plain = b'"messageId"' not in joined
            return batch
    items = batch.items
    decode_event = _event_decoder.decode
    for record in records:
        value = record.value
        if b'"command"' not in value:  # an event, decoded in one step
            try:
                items.append(decode_event(value))
                continue
            except msgspec.DecodeError:
                pass  # decoded again below, for the reason
        try:
            wire = _decoder.decode(value)
        except msgspec.DecodeError as exc:
            batch.poison.append((record.key, _dead_letter(record, f"undecodable: {exc}")))
            continue
        if wire.command is not None:
            items.append(Command(wire.user_id, wire.command))
            continue
        items.append(
            Event(
                user_id=wire.user_id,
                event_type=wire.event_type,
                timestamp=wire.timestamp,
                properties=wire.properties,
                traits=wire.traits,
                message_id=wire.message_id,
            )
        )
    return batch


def dead_letter(event: Event, reason: str) -> bytes:
    """The dead-letter value of an event the engine refused."""
    return _encoder.encode({"reason": reason, "event": msgspec.to_builtins(event)})


def _dead_letter(record: Record, reason: str) -> bytes:
    return _encoder.encode(
        {
            "reason": reason,
            "partition": record.partition,
            "offset": record.offset,
            "value": record.value.decode("utf-8", "replace"),
        }
    )
