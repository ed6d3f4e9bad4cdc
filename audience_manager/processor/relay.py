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
from audience_manager.store import ChangeRecord, StateStore

__all__ = ["CHANGES", "ChangeRelay", "change_message"]

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


class ChangeRelay:
    """Copies new change-log lines to the topic; used by one thread at a time."""

    def __init__(self, store: StateStore, bus: EventBus, topic: str = CHANGES) -> None:
        self.store = store
        self.bus = bus
        self.topic = topic
        self.position = store.marker(_MARKER)

    def relay(self, page: int = 500_000) -> int:
        """Publish every line after the marker; returns how many were published."""
        published = 0
        while True:
            lines = self.store.changes_since(self.position, page)
            if not lines:
                return published
            self.bus.publish(self.topic, [(c.user_id, change_message(n, c)) for n, c in lines])
            self.position = lines[-1][0]
            self.store.set_marker(_MARKER, self.position)
            published += len(lines)
