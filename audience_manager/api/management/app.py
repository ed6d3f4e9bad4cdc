"""The Segment Management API (:8081): segments, members, audiences, users, attributes.

``create_app(settings)`` opens (and migrates) the configured backends when the app
starts and closes them when it stops; pass ``backends`` to use ones the caller owns.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from audience_manager import __version__
from audience_manager.api.common import EVENTS_TOPIC, install_common
from audience_manager.api.errors import RETRY_AFTER_SECONDS, error_response, install_error_handlers
from audience_manager.api.management.attributes import routes as attributes
from audience_manager.api.management.audiences import routes as audiences
from audience_manager.api.management.deps import ManagementContext
from audience_manager.api.management.membership_cache import MembershipCache
from audience_manager.api.management.processor_client import (
    ProcessorClient,
    ProcessorNotAnswering,
)
from audience_manager.api.management.segments import routes as segments
from audience_manager.api.management.users import routes as users
from audience_manager.backends import Backends, open_backends
from audience_manager.bus.base import BusError, EventBus
from audience_manager.catalog.errors import CatalogError
from audience_manager.config import Settings
from audience_manager.store import StoreError

__all__ = ["OPENAPI_TAGS", "create_app"]

log = logging.getLogger(__name__)

OPENAPI_TAGS: list[dict[str, Any]] = [
    {"name": "segments", "description": "Segment definitions, rules and previews."},
    {"name": "members", "description": "Members of a segment: pages, exports, uploads."},
    {"name": "audiences", "description": "Boolean algebra over segments: counts, overlaps."},
    {"name": "users", "description": "Profiles, memberships, explanations, erasure."},
    {"name": "attributes", "description": "Computed attributes over events."},
    {"name": "health", "description": "Liveness, readiness and metrics."},
    {"name": "status", "description": "Processing lag."},
]


def create_app(
    settings: Settings, backends: Backends | None = None, *, processor_timeout: float = 10.0
) -> FastAPI:
    """The management app; ``processor_timeout`` bounds waits for the processor."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backends is not None:
            yield
            return
        opened = await run_in_threadpool(open_backends, settings, migrate_catalog=True)
        _attach(app, settings, opened, processor_timeout)
        try:
            yield
        finally:
            opened.close()

    app = FastAPI(
        title="Audience Manager — Segment Management API",
        version=__version__,
        description="Define segments, browse and export their members, count audiences.",
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    _install_unavailable_handlers(app)
    # Before the segment routes, so /api/segments/overlap is not taken for a segment id.
    app.include_router(audiences.router)
    app.include_router(segments.router)
    app.include_router(users.router)
    app.include_router(attributes.router)
    install_common(app, "management")
    if backends is not None:
        _attach(app, settings, backends, processor_timeout)
    return app


def _attach(app: FastAPI, settings: Settings, backends: Backends, timeout: float) -> None:
    """Put what the routes and the common endpoints need on ``app.state``."""
    app.state.settings = settings
    app.state.bus = backends.bus
    app.state.store = backends.store
    app.state.readiness = _readiness(backends)
    app.state.context = ManagementContext(
        settings=settings,
        backends=backends,
        cache=MembershipCache(backends.store, stride=_stride(backends.bus)),
        processor=ProcessorClient(backends.store, timeout=timeout, bus=backends.bus),
    )


def _stride(bus: EventBus) -> int:
    """How store user ids interleave: one run per partition when processors share them."""
    return bus.partitions if bus.shares_partitions else 1


def _readiness(backends: Backends) -> Callable[[], dict[str, str]]:
    def check() -> dict[str, str]:
        return {
            "catalog": _probe(backends.catalog.current_revision),
            "store": _probe(backends.store.positions),
            "bus": _probe(lambda: backends.bus.end_offsets(EVENTS_TOPIC)),
        }

    return check


def _probe(call: Callable[[], object]) -> str:
    try:
        call()
    except (CatalogError, StoreError, BusError, SQLAlchemyError) as exc:
        log.warning("readiness check failed: %s", exc)
        return "DOWN"
    return "UP"


def _install_unavailable_handlers(app: FastAPI) -> None:
    """503 with ``Retry-After`` when the processor does not answer in time."""
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}

    async def processor(_: Request, exc: Exception) -> JSONResponse:
        log.warning("processor not answering: %s", exc)
        message = "processor not answering; retry shortly"
        return error_response(503, "processor_unavailable", message, headers=retry)

    app.add_exception_handler(ProcessorNotAnswering, processor)
