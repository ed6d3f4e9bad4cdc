"""Publish the membership-change log to the ``membership-changes`` topic.

The state store's change log is the source of truth (it is written in the same commit as
the membership itself); the relay copies its lines to the bus after each commit and keeps
the number of the last line it published as a store marker. After a crash it resumes from
the marker, so every change reaches the topic at least once (lines published just before
a crash, whose marker was not yet stored, are published again).
"""

from __future__ import annotations

import msgspec

from audience_manager.bus.base import EventBus
from audience_manager.store import ChangeBlock, ChangeRecord, StateStore
from audience_manager.store.base import CHANGE_KINDS

__all__ = ["CHANGES", "ChangeRelay", "change_message", "change_messages", "change_values"]

CHANGES = "membership-changes"
_MARKER = "relayed-changes"


class _Message(msgspec.Struct, rename="camel", gc=False):
    segment_id: str
    user_id: str
    change: str
    at: int
    sequence: int


_encoder = msgspec.json.Encoder()


def change_message(sequence: int, line: ChangeRecord) -> bytes:
    """The topic's value for one change line (``drop``: a segment's members all left;
    ``erase``: a user was erased everywhere)."""
    return _encoder.encode(_Message(line.segment_id, line.user_id, line.change, line.at, sequence))


def change_messages(first: int, block: ChangeBlock) -> list[tuple[str, bytes]]:
    """The topic's records for a block of lines numbered from ``first``: the same bytes as
    :func:`change_message` gives."""
    return list(zip(block.user_ids, change_values(first, block), strict=True))


def change_values(first: int, block: ChangeBlock) -> list[bytes]:
    """The topic's values for a block of lines numbered from ``first`` (its keys are the
    block's user ids), put together from pieces encoded once per block."""
    if not len(block):
        return []
    heads = [b'{"segmentId":%b,"userId":' % _encoder.encode(s) for s in block.segments]
    kinds = [b',"change":"%b","at":' % k.encode() for k in CHANGE_KINDS]
    # One JSON string per line: JSON never holds a raw newline.
    users = _encoder.encode_lines(block.user_ids).split(b"\n")[:-1]
    return [
        b'%b%b%b%d,"sequence":%d}' % (heads[s], user, kinds[k], at, n)
        for s, user, k, at, n in zip(
            block.segment.tolist(),
            users,
            block.kind.tolist(),
            block.at.tolist(),
            range(first, first + len(block)),
            strict=True,
        )
    ]


class ChangeRelay:
    """Copies new change-log lines to the topic; used by one thread at a time."""

    def __init__(self, store: StateStore, bus: EventBus, topic: str = CHANGES) -> None:
        self.store = store
        self.bus = bus
        self.topic = topic
        self.position = store.marker(_MARKER)

    def resume(self) -> None:
        """Carry on from the stored marker (another relay may have moved it)."""
        self.position = self.store.marker(_MARKER)

    def relay(self, page: int = 500_000) -> int:
        """Publish every line after the marker; returns how many were published."""
        published = 0
        while True:
            blocks = self.store.change_blocks_since(self.position, page)
            if not blocks:
                return published
            keys: list[str] = []
            values: list[bytes] = []
            for first, block in blocks:
                keys += block.user_ids
                values += change_values(first, block)
            self.bus.publish_many(self.topic, keys, values)  # durable once it returns
            first, block = blocks[-1]
            self.position = first + len(block) - 1
            self.store.set_marker(_MARKER, self.position)
            published += len(keys)
