"""Computed-attribute writes inside a catalog transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from audience_manager.catalog import store
from audience_manager.catalog.errors import Conflict, InvalidInput
from audience_manager.catalog.models import (
    AttributeRecord,
    SegmentRecord,
    new_attribute_id,
    utc_now,
)
from audience_manager.catalog.schemas import AttributeCreate, AttributeRead
from audience_manager.catalog.validation import rule_fields
from audience_manager.rules.attributes import ComputedAttribute, parse_attribute
from audience_manager.rules.errors import RuleIssue, RuleValidationError
from audience_manager.rules.model import parse_rules

__all__ = ["check_attribute", "create_attribute", "delete_attribute", "replace_attribute"]


def check_attribute(data: AttributeCreate) -> ComputedAttribute:
    """Validate a definition; :class:`InvalidInput` names each problem by its body path."""
    try:
        return parse_attribute(data.model_dump(by_alias=True), path="")
    except RuleValidationError as exc:
        raise InvalidInput(
            RuleIssue(issue.path.removeprefix("."), issue.message) for issue in exc.issues
        ) from exc


def create_attribute(session: Session, revision: int, data: AttributeCreate) -> AttributeRead:
    """Insert a computed attribute at ``revision``; ``Conflict`` when the name is taken."""
    attribute = check_attribute(data)
    taken = session.scalars(
        select(AttributeRecord.id).where(
            AttributeRecord.deleted_at.is_(None), AttributeRecord.name == attribute.name
        )
    ).first()
    if taken is not None:
        raise Conflict(f"a computed attribute named {attribute.name!r} already exists")
    now = utc_now()
    record = AttributeRecord(
        id=new_attribute_id(),
        **_definition(attribute),
        version=1,
        created_at=now,
        updated_at=now,
        deleted_at=None,
        revision=revision,
    )
    session.add(record)
    session.flush()
    return store.attribute_read(record)


def replace_attribute(
    session: Session, revision: int, name: str, data: AttributeCreate
) -> AttributeRead:
    """Replace a computed attribute's definition at ``revision``; its version goes up."""
    record = store.find_attribute(session, name)
    attribute = check_attribute(data)
    if attribute.name != record.name:
        raise InvalidInput.at("name", "an attribute cannot be renamed; create a new one instead")
    for key, value in _definition(attribute).items():
        setattr(record, key, value)
    record.version += 1
    record.updated_at = utc_now()
    record.revision = revision
    session.flush()
    return store.attribute_read(record)


def delete_attribute(session: Session, revision: int, name: str) -> None:
    """Soft-delete a computed attribute; ``Conflict`` while a live segment's rules use it."""
    record = store.find_attribute(session, name)
    users = sorted(
        segment_name
        for segment_name, rules in session.execute(
            select(SegmentRecord.name, SegmentRecord.rules).where(
                SegmentRecord.deleted_at.is_(None), SegmentRecord.rules.is_not(None)
            )
        )
        if name in rule_fields(parse_rules(rules))
    )
    if users:
        raise Conflict(
            f"computed attribute {name!r} is used by segment(s) {', '.join(map(repr, users))}; "
            "change or delete them first"
        )
    record.deleted_at = record.updated_at = utc_now()
    record.revision = revision


def _definition(attribute: ComputedAttribute) -> dict[str, Any]:
    return {
        "name": attribute.name,
        "event_type": attribute.event_type,
        "aggregate": attribute.aggregate,
        "property": attribute.property,
        "where": [
            condition.model_dump(mode="json", by_alias=True, exclude_unset=True)
            for condition in attribute.where
        ],
        "within": attribute.within,
        "description": attribute.description,
    }
