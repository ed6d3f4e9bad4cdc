"""Group commit: concurrent requests share one durable ``publish`` of the event log.

Each request hands its records to the :class:`Publisher` and waits. One background task
takes everything queued, publishes it in a single call (in a worker thread, so the event
loop keeps accepting requests while the log fsyncs), and as soon as that call returns
starts the next one with whatever arrived meanwhile. Under load the groups grow by
themselves, so the cost of an fsync is spread over many requests; when idle a lone request
is published at once. A request's records always travel in one call (``publish`` is all
or nothing), and a request hears back only once the call holding its records returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from itertools import chain

from prometheus_client import Counter, Histogram

from audience_manager.bus.base import BusError, BusUnavailable, EventBus

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

_ACCEPTED = Counter("am_ingestion_events_accepted_total", "Events durably published")
_REFUSED = Counter("am_ingestion_publish_failures_total", "Publish calls the event log refused")
_GROUP = Histogram(
    "am_ingestion_publish_records",
    "Records per publish call (group commit)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000),
)
_SECONDS = Histogram("am_ingestion_publish_seconds", "Duration of one publish call")

Records = Sequence[tuple[str, bytes]]


class Publisher:
    """Publishes records to ``topic`` of ``bus``, grouping concurrent callers.

    ``max_records`` caps one call (a single larger request still goes alone, whole).
    Create it, then :meth:`start` it inside the running event loop; :meth:`close` publishes
    what is queued and stops.
    """

    def __init__(self, bus: EventBus, topic: str, *, max_records: int = 20_000) -> None:
        self._bus = bus
        self._topic = topic
        self._max_records = max_records
        self._queue: deque[tuple[Records, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_failure: tuple[float, str] | None = None
        #: Publish calls made and records they carried (for monitoring and tests).
        self.calls = 0
        self.records = 0

    def start(self) -> None:
        """Start the background task; call from within the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"publish-{self._topic}"
            )

    @property
    def accepting(self) -> bool:
        """Whether :meth:`publish` takes records: started and not closing."""
        return self._task is not None and not self._closing

    async def publish(self, records: Records) -> None:
        """Return once ``records`` are durable in the log.

        Raises :class:`BusUnavailable` if the log refused them (then none of them is
        visible) or the publisher is shutting down.
        """
        if not self.accepting:
            raise BusUnavailable("ingestion is not accepting events (starting or stopping)")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((records, future))
        self._wakeup.set()
        await future

    def failed_recently(self, seconds: float = 10.0) -> str | None:
        """Why the last publish failed, if it did within ``seconds`` and none succeeded since."""
        if self._last_failure is None:
            return None
        at, reason = self._last_failure
        return reason if time.monotonic() - at <= seconds else None

    async def close(self) -> None:
        """Publish everything already queued, then stop the background task."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._publish_group(self._take_group())

    def _take_group(self) -> list[tuple[Records, asyncio.Future[None]]]:
        group = [self._queue.popleft()]
        size = len(group[0][0])
        while self._queue and size + len(self._queue[0][0]) <= self._max_records:
            entry = self._queue.popleft()
            group.append(entry)
            size += len(entry[0])
        return group

    async def _publish_group(self, group: list[tuple[Records, asyncio.Future[None]]]) -> None:
        records = (
            group[0][0] if len(group) == 1 else list(chain.from_iterable(rs for rs, _ in group))
        )
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._bus.publish, self._topic, records)
        except BusError as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("publishing %d events failed: %s", len(records), reason)
            _REFUSED.inc()
            self._last_failure = (time.monotonic(), reason)
            for _, future in group:
                if not future.done():
                    error = BusUnavailable(f"the event log is unavailable: {reason}")
                    error.__cause__ = exc
                    future.set_exception(error)
            return
        except Exception as exc:  # the callers' own records were refused: they get the error
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        _SECONDS.observe(time.perf_counter() - started)
        _GROUP.observe(len(records))
        _ACCEPTED.inc(len(records))
        self._last_failure = None
        self.calls += 1
        self.records += len(records)
        for _, future in group:
            if not future.done():
                future.set_result(None)
