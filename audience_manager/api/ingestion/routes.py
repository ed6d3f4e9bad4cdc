"""``POST /api/events`` and ``POST /api/events/batch``: validate, publish durably, answer 202.

The routes read the raw body and hand it to :class:`EventIntake` (msgspec and
hand-written checks) instead of declaring a FastAPI body model: per event that is many
times faster. The request shapes are still described in OpenAPI (``openapi_extra``).
A 202 is sent only once the event log has the events durably; a log outage is a 503 with
``Retry-After`` and nothing accepted.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from audience_manager.api.auth import require
from audience_manager.api.errors import ApiError
from audience_manager.api.ingestion.bodies import (
    BodyError,
    BodyTooLarge,
    InvalidEvents,
    MalformedBody,
    TooManyEvents,
)
from audience_manager.api.ingestion.schemas import (
    Accepted,
    ErrorBody,
    batch_request_body,
    event_request_body,
)
from audience_manager.api.ingestion.service import (
    MAX_BATCH_BODY_BYTES,
    MAX_EVENT_BODY_BYTES,
    EventIntake,
)

__all__ = ["accepted_body", "event_routes", "refusal"]

# Refused bodies → status and code: one table.
_STATUS: dict[type[BodyError], tuple[int, str]] = {
    MalformedBody: (400, "malformed_json"),
    BodyTooLarge: (413, "payload_too_large"),
    TooManyEvents: (413, "too_many_events"),
    InvalidEvents: (422, "invalid_request"),
}


def refusal(exc: BodyError) -> ApiError:
    """The API error answering a refused body."""
    status, code = _STATUS[type(exc)]
    return ApiError(status, code, exc.message, [issue.as_detail() for issue in exc.issues])


def accepted_body(count: int) -> bytes:
    """The JSON of a 202: ``{"accepted": count}``."""
    return b'{"accepted":%d}' % count


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The body is not valid JSON."),
    401: _error("An API key is required, or the one given is not valid."),
    403: _error("The API key lacks the `ingest` scope."),
    413: _error("The body, or the number of events in it, is too large."),
    422: _error("Invalid events: `details` give each problem's index and path."),
    503: _error("The event log is unavailable: retry after `Retry-After` seconds."),
}


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body; ``BodyTooLarge`` past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise BodyTooLarge(limit)
        return await request.body()  # the server holds the body to its declared length
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _intake(request: Request) -> EventIntake:
    intake: EventIntake = request.app.state.intake
    return intake


def event_routes() -> APIRouter:
    """The event routes; every one needs a key with the ``ingest`` scope."""
    router = APIRouter(tags=["events"], dependencies=[Depends(require("ingest"))])

    @router.post(
        "/api/events",
        status_code=202,
        response_model=Accepted,
        responses=_RESPONSES,
        openapi_extra=event_request_body(),
        summary="Send one event",
    )
    async def post_event(request: Request) -> Response:
        """Accept one event; the 202 means it is durably in the event log."""
        try:
            body = await _read_body(request, MAX_EVENT_BODY_BYTES)
            count = await _intake(request).accept_event(body)
        except BodyError as exc:
            raise refusal(exc) from None
        return Response(accepted_body(count), status_code=202, media_type="application/json")

    @router.post(
        "/api/events/batch",
        status_code=202,
        response_model=Accepted,
        responses=_RESPONSES,
        openapi_extra=batch_request_body(),
        summary="Send up to 1,000 events, all or nothing",
    )
    async def post_batch(request: Request) -> Response:
        """Accept 1 to 1,000 events as ``{"events": [...]}``, a JSON array or NDJSON.

        All or nothing: if any event is invalid, none is published and the 422 lists every
        problem with the event's index and path.
        """
        try:
            body = await _read_body(request, MAX_BATCH_BODY_BYTES)
            count = await _intake(request).accept_batch(body, request.headers.get("content-type"))
        except BodyError as exc:
            raise refusal(exc) from None
        return Response(accepted_body(count), status_code=202, media_type="application/json")

    return router
