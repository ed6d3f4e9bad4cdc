"""A lean ASGI front for the two event routes, for throughput.

Routing a request through FastAPI costs several times more than accepting the event
itself (the middleware stack, routing, dependency resolution, task groups). The ingestion
app hands every request to this front first; it serves ``POST /api/events`` and
``POST /api/events/batch`` directly with the same pieces the FastAPI routes use: the
``require("ingest")`` key check, :class:`EventIntake`, the error table of ``routes`` and
the error shape of ``api.errors``, recording the same request metrics. Every other request
passes through to FastAPI, where the two routes are also declared (and documented in
OpenAPI); they answer identically and serve when the app is built with ``fast_path=False``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from audience_manager.api.auth import require
from audience_manager.api.common import LATENCY, REQUESTS
from audience_manager.api.errors import RETRY_AFTER_SECONDS, ApiError, error_response
from audience_manager.api.ingestion.bodies import BodyError, BodyTooLarge
from audience_manager.api.ingestion.routes import accepted_body, refusal
from audience_manager.api.ingestion.service import (
    MAX_BATCH_BODY_BYTES,
    MAX_EVENT_BODY_BYTES,
    EventIntake,
)
from audience_manager.bus.base import BusUnavailable

__all__ = ["EventFront"]

log = logging.getLogger(__name__)

_ROUTES = {
    "/api/events": (False, MAX_EVENT_BODY_BYTES),
    "/api/events/batch": (True, MAX_BATCH_BODY_BYTES),
}
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _Disconnected(Exception):
    """The client went away before its body arrived."""


class EventFront:
    """ASGI middleware serving the event routes; see the module."""

    def __init__(self, app: ASGIApp, app_name: str = "ingestion") -> None:
        self.app = app
        self._name = app_name
        self._check = require("ingest")
        self._counters: dict[tuple[str, int], Counter] = {}
        self._timers: dict[str, Histogram] = {
            path: LATENCY.labels(app_name, "POST", path) for path in _ROUTES
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = await self._serve(scope, receive, send, *route)
        path: str = scope["path"]
        self._timers[path].observe(time.perf_counter() - started)
        counter = self._counters.get((path, status))
        if counter is None:
            counter = REQUESTS.labels(self._name, "POST", path, str(status))
            self._counters[(path, status)] = counter
        counter.inc()

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, batch: bool, limit: int
    ) -> int:
        """Answer one request; return its status (499: the client went away)."""
        length, content_type = _content_headers(scope)
        try:
            await self._check(Request(scope, receive))
            body = await _read_body(receive, limit, length)
            intake: EventIntake = scope["app"].state.intake
            if batch:
                count = await intake.accept_batch(body, content_type)
            else:
                count = await intake.accept_event(body)
        except _Disconnected:
            return 499
        except BodyError as exc:
            error = refusal(exc)
            response = error_response(error.status, error.code, error.message, error.details)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.details)
        except BusUnavailable as exc:
            log.warning("backend unavailable: %s", exc)
            response = error_response(
                503,
                "unavailable",
                "a backend is unavailable; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        else:
            content = accepted_body(count)
            headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(content))]
            await send({"type": "http.response.start", "status": 202, "headers": headers})
            await send({"type": "http.response.body", "body": content})
            return 202
        await response(scope, receive, send)
        return response.status_code


def _content_headers(scope: Scope) -> tuple[int | None, str | None]:
    """The declared ``Content-Length`` and the ``Content-Type`` of a request."""
    length: int | None = None
    content_type: str | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"content-type":
            content_type = value.decode("latin-1")
    return length, content_type


async def _read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The whole request body; ``BodyTooLarge`` past ``limit`` bytes."""
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    message: Any = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
