"""What both apps serve: health, readiness, status with processor lag, Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from audience_manager.api.auth import require
from audience_manager.bus.base import EventBus
from audience_manager.store import StateStore

__all__ = ["EVENTS_TOPIC", "install_common", "processor_status"]

EVENTS_TOPIC = "events"
REQUESTS = Counter("am_http_requests_total", "HTTP requests", ["app", "method", "route", "status"])
LATENCY = Histogram("am_http_request_seconds", "HTTP request latency", ["app", "method", "route"])


def processor_status(bus: EventBus, store: StateStore) -> dict[str, Any]:
    """Accepted events not yet applied, per partition and in total."""
    end = bus.end_offsets(EVENTS_TOPIC)
    applied = store.positions()
    lag = {p: max(0, end.get(p, 0) - applied.get(p, 0)) for p in end}
    return {
        "lag": sum(lag.values()),
        "partitions": {str(p): n for p, n in sorted(lag.items())},
        "applied": store.applied(),
    }


def install_common(app: FastAPI, name: str) -> None:
    """Health, readiness, status and metrics routes, and request metrics."""
    router = APIRouter()

    @router.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "UP"}

    @router.get("/actuator/health", tags=["health"])
    async def actuator_health() -> dict[str, str]:
        return {"status": "UP"}

    @router.get("/health/ready", tags=["health"])
    def ready(request: Request, response: Response) -> dict[str, Any]:
        checks = request.app.state.readiness()
        ok = all(v == "UP" for v in checks.values())
        if not ok:
            response.status_code = 503
            response.headers["Retry-After"] = "2"
        return {"status": "UP" if ok else "DOWN", "checks": checks}

    @router.get("/api/status", tags=["status"], dependencies=[Depends(require("read"))])
    def status(request: Request) -> dict[str, Any]:
        state = request.app.state
        return {"processor": processor_status(state.bus, state.store)}

    @router.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(name, request.method, path).observe(time.perf_counter() - started)
        REQUESTS.labels(name, request.method, path, str(response.status_code)).inc()
        return response
