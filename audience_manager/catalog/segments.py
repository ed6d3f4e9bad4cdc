"""Segment writes inside a catalog transaction: validation, references, status."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from audience_manager.catalog import store
from audience_manager.catalog.errors import Conflict, InvalidInput, NotFound
from audience_manager.catalog.models import (
    SegmentRecord,
    SegmentReferenceRecord,
    new_segment_id,
    utc_now,
)
from audience_manager.catalog.schemas import SegmentCreate, SegmentRead
from audience_manager.catalog.validation import CheckedRules, check_segment

__all__ = ["STATUSES", "create_segment", "delete_segment", "replace_segment", "set_status"]

STATUSES = ("BUILDING", "ACTIVE", "FAILED")


def create_segment(session: Session, revision: int, data: SegmentCreate) -> SegmentRead:
    """Insert a new segment at ``revision``; see ``CatalogService.create_segment``."""
    checked = _check(session, data, segment_id=None)
    _claim_name(session, data.name, owner=None)
    now = utc_now()
    dynamic = data.type == "DYNAMIC"
    record = SegmentRecord(
        id=new_segment_id(),
        name=data.name,
        description=data.description,
        type=data.type,
        rules=checked.rules,
        status="BUILDING" if dynamic else "ACTIVE",
        status_progress=0.0 if dynamic else 1.0,
        status_reason=None,
        version=1,
        size=0,
        created_at=now,
        updated_at=now,
        deleted_at=None,
        revision=revision,
    )
    session.add(record)
    session.flush()  # the row the references point from must exist first
    _store_references(session, record.id, checked)
    return store.segment_read(record)


def replace_segment(
    session: Session, revision: int, id_or_name: str, data: SegmentCreate
) -> SegmentRead:
    """Replace a segment's definition at ``revision``; see ``CatalogService.replace_segment``."""
    record = store.find_segment(session, id_or_name)
    if data.type != record.type:
        raise InvalidInput.at(
            "type", f"a {record.type} segment cannot become {data.type}; create a new one"
        )
    checked = _check(session, data, segment_id=record.id)
    if data.name != record.name:
        _claim_name(session, data.name, owner=record.id)
        _check_not_named_by_others(session, record)
    record.name = data.name
    record.description = data.description
    record.rules = checked.rules
    record.version += 1
    record.updated_at = utc_now()
    record.revision = revision
    if record.type == "DYNAMIC":
        record.status, record.status_progress, record.status_reason = "BUILDING", 0.0, None
    _drop_references(session, record.id)
    _store_references(session, record.id, checked)
    return store.segment_read(record)


def delete_segment(session: Session, revision: int, id_or_name: str) -> None:
    """Soft-delete a segment at ``revision``; see ``CatalogService.delete_segment``."""
    record = store.find_segment(session, id_or_name)
    referrers = _referrer_names(session, record.id)
    if referrers:
        raise Conflict(
            f"segment {record.name!r} is referenced by {', '.join(map(repr, referrers))}; "
            "change or delete those segments first"
        )
    record.deleted_at = record.updated_at = utc_now()
    record.revision = revision
    _drop_references(session, record.id)


def set_status(
    session: Session,
    segment_id: str,
    status: str,
    *,
    progress: float | None,
    reason: str | None,
    size: int | None,
    version: int | None,
) -> SegmentRead:
    """Record a processing status; see ``CatalogService.set_status``."""
    if status not in STATUSES:
        raise InvalidInput.at("status", f"must be one of {', '.join(STATUSES)}")
    if progress is not None and not 0.0 <= progress <= 1.0:
        raise InvalidInput.at("progress", "must be between 0 and 1")
    if size is not None and size < 0:
        raise InvalidInput.at("size", "must be at least 0")
    record = store.find_segment(session, segment_id, by_name=False)
    _check_version(record, version)
    if (status, reason) == (record.status, record.status_reason):
        # Progress or size only: no revision. The update is guarded by what was just read,
        # so a status changed meanwhile is never overwritten without a revision.
        values = _status_values(record, status, progress, reason, size)
        guarded = (
            update(SegmentRecord)
            .where(
                SegmentRecord.id == record.id,
                SegmentRecord.deleted_at.is_(None),
                SegmentRecord.version == record.version,
                SegmentRecord.status == record.status,
                SegmentRecord.status_reason.is_(None)
                if record.status_reason is None
                else SegmentRecord.status_reason == record.status_reason,
            )
            .values(values)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], session.execute(guarded)).rowcount == 1:
            session.refresh(record)
            return store.segment_read(record)
    new_revision = store.bump_revision(session)
    session.refresh(record)  # read again, now under the catalog's write lock
    if record.deleted_at is not None:
        raise NotFound(f"no segment {segment_id!r}")
    _check_version(record, version)
    values = _status_values(record, status, progress, reason, size)
    for key, value in {**values, "revision": new_revision}.items():
        setattr(record, key, value)
    session.flush()
    return store.segment_read(record)


def _check(session: Session, data: SegmentCreate, segment_id: str | None) -> CheckedRules:
    return check_segment(
        data,
        segment_id=segment_id,
        live=store.live_segments(session),
        graph=store.reference_graph(session),
        attributes=store.attribute_names(session),
    )


def _claim_name(session: Session, name: str, owner: str | None) -> None:
    taken = session.scalars(
        select(SegmentRecord.id).where(
            SegmentRecord.deleted_at.is_(None), SegmentRecord.name == name
        )
    ).first()
    if taken is not None and taken != owner:
        raise Conflict(f"a segment named {name!r} already exists")


def _referrer_names(session: Session, target_id: str, reference: str | None = None) -> list[str]:
    query = (
        select(SegmentRecord.name)
        .join(SegmentReferenceRecord, SegmentReferenceRecord.source_id == SegmentRecord.id)
        .where(SegmentReferenceRecord.target_id == target_id)
    )
    if reference is not None:
        query = query.where(SegmentReferenceRecord.reference == reference)
    return list(session.scalars(query.distinct().order_by(SegmentRecord.name)))


def _check_not_named_by_others(session: Session, record: SegmentRecord) -> None:
    referrers = _referrer_names(session, record.id, reference=record.name)
    if referrers:
        raise Conflict(
            f"segment {record.name!r} cannot be renamed: "
            f"{', '.join(map(repr, referrers))} refer to it by name"
        )


def _drop_references(session: Session, source_id: str) -> None:
    session.execute(
        delete(SegmentReferenceRecord).where(SegmentReferenceRecord.source_id == source_id)
    )


def _store_references(session: Session, source_id: str, checked: CheckedRules) -> None:
    session.add_all(
        SegmentReferenceRecord(source_id=source_id, reference=reference, target_id=target)
        for reference, target in sorted(checked.references.items())
    )
    session.flush()


def _check_version(record: SegmentRecord, version: int | None) -> None:
    if version is not None and record.version != version:
        raise Conflict(f"segment {record.id!r} is at version {record.version}, not {version}")


def _status_values(
    record: SegmentRecord,
    status: str,
    progress: float | None,
    reason: str | None,
    size: int | None,
) -> dict[str, Any]:
    if status == "ACTIVE":
        progress = 1.0
    elif progress is None:
        entering = status == "BUILDING" and record.status != "BUILDING"
        progress = 0.0 if entering else record.status_progress
    values: dict[str, Any] = {
        "status": status,
        "status_progress": progress,
        "status_reason": reason,
    }
    if size is not None:
        values["size"] = size
    return values
