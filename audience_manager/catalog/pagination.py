"""Keyset pagination in ``(created_at, id)`` order behind opaque cursors.

A cursor encodes the position of the last item returned, so pages stay stable while rows
are added or deleted elsewhere: each item that exists throughout is listed exactly once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, and_, or_

from audience_manager.catalog.errors import InvalidInput
from audience_manager.catalog.models import AttributeRecord, SegmentRecord

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "decode_cursor",
    "encode_cursor",
    "next_cursor",
    "paginate",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

RecordT = TypeVar("RecordT", SegmentRecord, AttributeRecord)


def encode_cursor(created_at: datetime, record_id: str) -> str:
    """An opaque cursor pointing just after the row ``(created_at, record_id)``."""
    raw = json.dumps([created_at.isoformat(), record_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor points after; :class:`InvalidInput` for a malformed one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, record_id = json.loads(raw)
        position = datetime.fromisoformat(created_at)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidInput.at("cursor", "not a cursor this listing returned") from exc
    if position.tzinfo is None or not isinstance(record_id, str):
        raise InvalidInput.at("cursor", "not a cursor this listing returned")
    return position, record_id


def paginate(
    query: Select[RecordT], model: type[RecordT], limit: int, cursor: str | None
) -> Select[RecordT]:
    """``query`` restricted to the page after ``cursor``, one row more than ``limit``.

    The extra row tells whether another page follows; see :func:`next_cursor`.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput.at("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    if cursor is not None:
        created_at, record_id = decode_cursor(cursor)
        query = query.where(
            or_(
                model.created_at > created_at,
                and_(model.created_at == created_at, model.id > record_id),
            )
        )
    return query.order_by(model.created_at, model.id).limit(limit + 1)


def next_cursor(rows: Sequence[RecordT], limit: int) -> str | None:
    """The cursor of the page after ``rows`` (fetched by :func:`paginate`), if any."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor(last.created_at, last.id)
