"""The event as the engine sees it: validated, with its event time resolved."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Event"]


class Event(msgspec.Struct, frozen=True, rename="camel", gc=False):
    """One user event.

    ``timestamp`` is the event time in epoch milliseconds; ingestion fills it with the
    arrival time when the client sent none. ``traits`` set profile attributes directly.
    """

    user_id: str
    event_type: str
    timestamp: int
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    traits: dict[str, Any] | None = None
    message_id: str | None = None
