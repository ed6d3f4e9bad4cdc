"""The Event Ingestion API (:8082): events in, durably into the ``events`` log, 202 out.

Run it with one uvicorn worker per process (``uvicorn.run(create_app(settings), ...)``);
add processes or replicas for more throughput. The embedded event log allows one writing
process per data directory, so against it run exactly one ingestion process.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from audience_manager import __version__
from audience_manager.api.common import EVENTS_TOPIC, install_common
from audience_manager.api.errors import install_error_handlers
from audience_manager.api.ingestion.front import EventFront
from audience_manager.api.ingestion.publisher import Publisher
from audience_manager.api.ingestion.routes import event_routes
from audience_manager.api.ingestion.service import EventIntake
from audience_manager.backends import Backends, open_backends
from audience_manager.bus.base import BusError
from audience_manager.config import Settings
from audience_manager.store import StoreError

__all__ = ["create_app", "readiness"]

TITLE = "Audience Manager — Event Ingestion"
_GC_THRESHOLDS = (50_000, 20, 100)  # as the processor's


def readiness(app: FastAPI) -> dict[str, str]:
    """``UP`` or ``DOWN: why`` for the event log and the state store."""
    state = app.state
    publisher: Publisher | None = getattr(state, "publisher", None)
    if publisher is None or not publisher.accepting:
        reason = "DOWN: not accepting events (starting or stopping)"
        return {"bus": reason, "store": reason}
    checks: dict[str, str] = {}
    try:
        state.bus.end_offsets(EVENTS_TOPIC)
    except BusError as exc:
        checks["bus"] = f"DOWN: {exc}"
    else:
        failure = publisher.failed_recently()
        checks["bus"] = "UP" if failure is None else f"DOWN: {failure}"
    try:
        state.store.positions()
    except StoreError as exc:
        checks["store"] = f"DOWN: {exc}"
    else:
        checks["store"] = "UP"
    return checks


def create_app(
    settings: Settings, backends: Backends | None = None, *, fast_path: bool = True
) -> FastAPI:
    """The ingestion app; opens its backends from ``settings`` unless given some.

    Backends it opened itself are closed when the app shuts down; given ones belong to
    the caller. Events queued at shutdown are still published before the log closes.
    ``fast_path`` serves the event routes through the lean ``front`` (the default);
    without it FastAPI serves them, identically but slower.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = (
            backends if backends is not None else await asyncio.to_thread(open_backends, settings)
        )
        app.state.bus = opened.bus
        app.state.store = opened.store
        publisher = Publisher(opened.bus, EVENTS_TOPIC)
        publisher.start()
        app.state.publisher = publisher
        app.state.intake = EventIntake(publisher)
        # What start-up built lives as long as the app: taken out of the cyclic
        # collector's reach, it is no longer rescanned by every collection, which under
        # load otherwise costs about as much as validating the events.
        gc.collect()
        gc.freeze()
        # A batch allocates thousands of containers that die as soon as it is published; at
        # the default threshold each one set off several young collections, and every few
        # seconds a full one. Collecting less often finds them already gone.
        thresholds = gc.get_threshold()
        gc.set_threshold(*_GC_THRESHOLDS)
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            await publisher.close()
            if backends is None:
                opened.close()

    app = _IngestionApp(
        title=TITLE,
        version=__version__,
        description=(
            "Send user events: one at a time or in batches of up to 1,000 (JSON or NDJSON). "
            "A 202 means the events are durably in the event log."
        ),
        docs_url="/docs",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if backends is not None:
        app.state.bus = backends.bus
        app.state.store = backends.store
    app.state.readiness = lambda: readiness(app)
    install_error_handlers(app)
    install_common(app, "ingestion")
    app.include_router(event_routes())
    if fast_path:
        app.front = EventFront(functools.partial(FastAPI.__call__, app))
    return app


class _IngestionApp(FastAPI):
    """FastAPI, with the event routes answered by the lean front before anything else.

    The front sits in front of the whole middleware stack Starlette builds (its error
    middleware included), so an event costs only what the front itself does.
    """

    front: EventFront | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            scope["app"] = self
            await self.front(scope, receive, send)
