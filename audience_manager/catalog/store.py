"""Queries and conversions the catalog service shares: revisions, lookups, read models."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from audience_manager.catalog.errors import CatalogUnavailable, NotFound
from audience_manager.catalog.models import (
    AttributeRecord,
    CatalogRevision,
    SegmentRecord,
    SegmentReferenceRecord,
)
from audience_manager.catalog.schemas import AttributeRead, SegmentRead
from audience_manager.rules.attributes import BUILTIN_ATTRIBUTES

__all__ = [
    "attribute_names",
    "attribute_read",
    "bump_revision",
    "find_attribute",
    "find_segment",
    "live_segments",
    "read_revision",
    "reference_graph",
    "segment_read",
]

_NOT_MIGRATED = "the catalog database has no revision row; run the catalog migrations"


def bump_revision(session: Session) -> int:
    """Take the next catalog revision in ``session``'s transaction.

    Catalog writers call this first: the update serialises them until they commit, so
    revisions become visible in order and checks that span rows see a stable catalog.
    """
    result = cast(
        CursorResult[Any],
        session.execute(
            update(CatalogRevision)
            .where(CatalogRevision.id == 1)
            .values(revision=CatalogRevision.revision + 1)
        ),
    )
    if result.rowcount != 1:
        raise CatalogUnavailable(_NOT_MIGRATED)
    return read_revision(session)


def read_revision(session: Session) -> int:
    """The catalog revision as ``session`` sees it."""
    revision = session.scalars(
        select(CatalogRevision.revision).where(CatalogRevision.id == 1)
    ).one_or_none()
    if revision is None:
        raise CatalogUnavailable(_NOT_MIGRATED)
    return revision


def find_segment(session: Session, id_or_name: str, *, by_name: bool = True) -> SegmentRecord:
    """The live segment with this id, else (``by_name``) with this name.

    Raises :class:`NotFound` when there is none.
    """
    live = SegmentRecord.deleted_at.is_(None)
    record = session.scalars(
        select(SegmentRecord).where(live, SegmentRecord.id == id_or_name)
    ).one_or_none()
    if record is None and by_name:
        record = session.scalars(
            select(SegmentRecord).where(live, SegmentRecord.name == id_or_name)
        ).one_or_none()
    if record is None:
        raise NotFound(f"no segment {id_or_name!r}")
    return record


def find_attribute(session: Session, name: str) -> AttributeRecord:
    """The live computed attribute named ``name``; :class:`NotFound` if none."""
    record = session.scalars(
        select(AttributeRecord).where(
            AttributeRecord.deleted_at.is_(None), AttributeRecord.name == name
        )
    ).one_or_none()
    if record is None:
        raise NotFound(f"no computed attribute {name!r}")
    return record


def live_segments(session: Session) -> dict[str, str]:
    """Id → name of every live segment."""
    rows = session.execute(
        select(SegmentRecord.id, SegmentRecord.name).where(SegmentRecord.deleted_at.is_(None))
    )
    return dict(rows.all())


def reference_graph(session: Session) -> dict[str, set[str]]:
    """Each live segment that references others → the ids it references."""
    graph: dict[str, set[str]] = {}
    rows = session.execute(
        select(SegmentReferenceRecord.source_id, SegmentReferenceRecord.target_id)
    )
    for source, target in rows:
        graph.setdefault(source, set()).add(target)
    return graph


def attribute_names(session: Session) -> set[str]:
    """Names of the built-in and the live computed attributes."""
    stored = session.scalars(
        select(AttributeRecord.name).where(AttributeRecord.deleted_at.is_(None))
    )
    return set(BUILTIN_ATTRIBUTES) | set(stored)


def segment_read(record: SegmentRecord) -> SegmentRead:
    """The read model of a segment row."""
    return SegmentRead(
        id=record.id,
        name=record.name,
        description=record.description,
        type=cast(Any, record.type),
        rules=record.rules,
        status=cast(Any, record.status),
        status_progress=record.status_progress,
        status_reason=record.status_reason,
        version=record.version,
        size=record.size,
        created_at=record.created_at,
        updated_at=record.updated_at,
        deleted=record.deleted_at is not None,
    )


def attribute_read(record: AttributeRecord) -> AttributeRead:
    """The read model of a computed attribute row."""
    return AttributeRead(
        id=record.id,
        name=record.name,
        event_type=record.event_type,
        aggregate=cast(Any, record.aggregate),
        property=record.property,
        where=record.where,
        within=record.within,
        description=record.description,
        version=record.version,
        created_at=record.created_at,
        updated_at=record.updated_at,
        deleted=record.deleted_at is not None,
    )
