"""One error shape for every response, and the table from domain errors to status codes.

``{"error": {"code", "message", "details"}}``: 4xx for the client's mistakes, 503 with
``Retry-After`` when a backend is unavailable, never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from audience_manager.bus.base import BusUnavailable
from audience_manager.catalog.errors import CatalogUnavailable, Conflict, InvalidInput, NotFound
from audience_manager.membership import AudienceError
from audience_manager.rules.errors import RuleValidationError
from audience_manager.store import StoreUnavailable

__all__ = ["ApiError", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    """An error a route raises on purpose: status, code, message and details."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error body every endpoint uses."""
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def _path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Map framework and domain errors to the error shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        details = [{"path": _path(tuple(e["loc"])), "message": e["msg"]} for e in errors]
        return error_response(422, "invalid_request", "the request is invalid", details)

    @app.exception_handler(RuleValidationError)
    async def _rules(_: Request, exc: RuleValidationError) -> JSONResponse:
        details = [{"path": i.path, "message": i.message} for i in exc.issues]
        return error_response(422, "invalid_rules", "the rules are invalid", details)

    @app.exception_handler(InvalidInput)
    async def _input(_: Request, exc: InvalidInput) -> JSONResponse:
        return error_response(422, "invalid_request", "the request is invalid", exc.details)

    @app.exception_handler(AudienceError)
    async def _audience(_: Request, exc: AudienceError) -> JSONResponse:
        details = [{"path": path, "message": message} for path, message in exc.issues]
        return error_response(422, "invalid_expression", "the expression is invalid", details)

    @app.exception_handler(NotFound)
    async def _missing(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("backend unavailable: %s", exc)
        return error_response(
            503,
            "unavailable",
            "a backend is unavailable; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    for unavailable in (StoreUnavailable, BusUnavailable, CatalogUnavailable, OperationalError):
        app.add_exception_handler(unavailable, _unavailable)
