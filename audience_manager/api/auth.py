"""API keys with scopes: ``ingest``, ``read``, ``admin`` (admin implies the others)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request

from audience_manager.api.errors import ApiError
from audience_manager.config import Settings

__all__ = ["require"]


def require(scope: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A dependency that admits requests whose key grants ``scope`` (or admin)."""

    async def check(request: Request) -> None:
        settings: Settings = request.app.state.settings
        if not settings.auth_required:
            return
        supplied = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
        if not supplied:
            raise ApiError(401, "unauthorized", "an API key is required (X-API-Key header)")
        for key in settings.api_keys:
            if hmac.compare_digest(key.key.get_secret_value(), supplied):
                if scope in key.scopes or "admin" in key.scopes:
                    return
                raise ApiError(403, "forbidden", f"this API key lacks the {scope!r} scope")
        raise ApiError(401, "unauthorized", "the API key is not valid")

    return check


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None
