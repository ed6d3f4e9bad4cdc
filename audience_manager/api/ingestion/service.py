"""What accepting events means: parse and validate a body, then publish it durably.

Both ways into the app (the FastAPI routes and the ASGI ``front``) call
:class:`EventIntake`, so they cannot differ in what they accept.
"""

from __future__ import annotations

import time

from audience_manager.api.ingestion.bodies import batch_records, event_records
from audience_manager.api.ingestion.publisher import Publisher

__all__ = ["MAX_BATCH_BODY_BYTES", "MAX_EVENT_BODY_BYTES", "EventIntake"]

MAX_EVENT_BODY_BYTES = 1 << 20
"""Largest body of one event; a valid event needs well under 100 KiB."""
MAX_BATCH_BODY_BYTES = 64 << 20
"""Largest body of a batch: 1,000 events of up to 64 KiB of properties and traits each."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EventIntake:
    """Turns request bodies into records of the event log, durably.

    Raises ``bodies.BodyError`` for a body it refuses (nothing is published) and
    ``BusUnavailable`` when the log cannot take the events (none of them is visible).
    """

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def accept_event(self, body: bytes) -> int:
        """Publish the one event of ``body``; return 1 once it is durable."""
        await self.publisher.publish(event_records(body, _now_ms()))
        return 1

    async def accept_batch(self, body: bytes, content_type: str | None) -> int:
        """Publish every event of a batch, or none; return how many once durable."""
        records = batch_records(body, content_type, _now_ms())
        await self.publisher.publish(records)
        return len(records)
