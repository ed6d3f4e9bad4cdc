"""The catalog's tables: segments, their references, computed attributes, the revision.

Written for SQLite and PostgreSQL alike: portable types only, JSON through
``sqlalchemy.JSON``, timestamps stored in UTC and read back timezone-aware. Rows are never
deleted: a delete sets ``deleted_at``, so the change feed can report it, and names are
unique among live rows only (a partial unique index, which both backends support).

Every write stamps the rows it touches with the catalog revision it took from
:class:`CatalogRevision` in the same transaction; "what changed since revision N" is then
a plain ``revision > N`` query.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ATTRIBUTE_ID_PREFIX",
    "NAMING_CONVENTION",
    "SEGMENT_ID_PREFIX",
    "AttributeRecord",
    "Base",
    "CatalogRevision",
    "SegmentRecord",
    "SegmentReferenceRecord",
    "UtcDateTime",
    "new_attribute_id",
    "new_segment_id",
    "utc_now",
]

SEGMENT_ID_PREFIX = "seg_"
ATTRIBUTE_ID_PREFIX = "attr_"

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names, so that both backends (and every migration) agree on them."""

_LIVE = "deleted_at IS NULL"


def new_segment_id() -> str:
    """A fresh opaque segment id: ``seg_`` and 16 hex digits."""
    return SEGMENT_ID_PREFIX + secrets.token_hex(8)


def new_attribute_id() -> str:
    """A fresh opaque computed-attribute id: ``attr_`` and 16 hex digits."""
    return ATTRIBUTE_ID_PREFIX + secrets.token_hex(8)


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    PostgreSQL keeps the zone (``timestamptz``); SQLite keeps the UTC wall time as text,
    which sorts in time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("catalog timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"unexpected timestamp value {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every catalog table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CatalogRevision(Base):
    """The catalog's single revision counter (one row, ``id = 1``).

    Every write increments it first, which also serialises catalog writers on both
    backends (a row lock on PostgreSQL, the write lock on SQLite).
    """

    __tablename__ = "catalog_revision"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SegmentRecord(Base):
    """A segment definition with its processing status."""

    __tablename__ = "segments"
    __table_args__ = (
        CheckConstraint("type IN ('DYNAMIC', 'STATIC')", name="type"),
        CheckConstraint("status IN ('BUILDING', 'ACTIVE', 'FAILED')", name="status"),
        CheckConstraint("status_progress >= 0 AND status_progress <= 1", name="progress"),
        CheckConstraint("version >= 1", name="version"),
        CheckConstraint("size >= 0", name="size"),
        Index(
            "uq_segments_live_name",
            "name",
            unique=True,
            sqlite_where=text(_LIVE),
            postgresql_where=text(_LIVE),
        ),
        Index("ix_segments_created_at_id", "created_at", "id"),
        Index("ix_segments_revision", "revision"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    rules: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    status_progress: Mapped[float] = mapped_column(Float, nullable=False)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SegmentReferenceRecord(Base):
    """One segment reference in a live segment's rules, resolved to the segment it names.

    ``reference`` is the id or name as written in the rules. The rows of a segment are
    replaced with its rules and removed when it is deleted, so they describe exactly the
    live reference graph.
    """

    __tablename__ = "segment_references"
    __table_args__ = (Index("ix_segment_references_target_id", "target_id"),)

    source_id: Mapped[str] = mapped_column(String(32), ForeignKey("segments.id"), primary_key=True)
    reference: Mapped[str] = mapped_column(String(256), primary_key=True)
    target_id: Mapped[str] = mapped_column(String(32), ForeignKey("segments.id"), nullable=False)


class AttributeRecord(Base):
    """A computed attribute definition (``/api/attributes``)."""

    __tablename__ = "attributes"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version"),
        Index(
            "uq_attributes_live_name",
            "name",
            unique=True,
            sqlite_where=text(_LIVE),
            postgresql_where=text(_LIVE),
        ),
        Index("ix_attributes_created_at_id", "created_at", "id"),
        Index("ix_attributes_revision", "revision"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    aggregate: Mapped[str] = mapped_column(String(16), nullable=False)
    property: Mapped[str | None] = mapped_column(Text, nullable=True)
    where: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    within: Mapped[str | None] = mapped_column(String(32), nullable=True)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False)
