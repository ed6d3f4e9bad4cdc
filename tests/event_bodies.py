"""Event bodies shared by the ingestion tests."""

from __future__ import annotations

from typing import Any

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BASE: dict[str, Any] = {"userId": "user123", "eventType": "purchase"}


def nested(levels: int) -> dict[str, Any]:
    """An object nesting ``levels`` objects, itself included."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"child": value}
    return value
