"""What the catalog takes and returns: pydantic models with camelCase JSON.

Timestamps serialise as ISO-8601 in UTC with a ``Z`` (``2024-05-01T12:00:00.123Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator
from pydantic.alias_generators import to_camel

from audience_manager.rules.attributes import AttributeAggregate, ComputedAttribute

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "MAX_NAME_LENGTH",
    "AttributeCreate",
    "AttributeRead",
    "CatalogChanges",
    "Page",
    "SegmentCreate",
    "SegmentRead",
    "SegmentStatus",
    "SegmentType",
    "Timestamp",
    "format_timestamp",
]

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000

SegmentType = Literal["DYNAMIC", "STATIC"]
SegmentStatus = Literal["BUILDING", "ACTIVE", "FAILED"]

ItemT = TypeVar("ItemT")


def format_timestamp(value: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision and a ``Z``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")
]


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class _ReadModel(_CamelModel):
    model_config = ConfigDict(frozen=True)


class SegmentCreate(_CamelModel):
    """The body of ``POST /api/segments`` and ``PUT /api/segments/{id}``.

    ``rules`` are required for a ``DYNAMIC`` segment and absent for a ``STATIC`` one (its
    members are uploaded); the catalog validates them and the references they make.
    """

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    type: SegmentType = "DYNAMIC"
    rules: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class SegmentRead(_ReadModel):
    """A segment as the catalog holds it.

    ``statusProgress`` runs from 0 to 1 while ``BUILDING`` and is 1 once ``ACTIVE``;
    ``statusReason`` says why a segment ``FAILED``. ``deleted`` is only ever true in the
    change feed.
    """

    id: str
    name: str
    description: str
    type: SegmentType
    rules: dict[str, Any] | None
    status: SegmentStatus
    status_progress: float
    status_reason: str | None = None
    version: int
    size: int
    created_at: Timestamp
    updated_at: Timestamp
    deleted: bool = False


class AttributeCreate(_CamelModel):
    """The body of ``POST /api/attributes`` and ``PUT /api/attributes/{name}``.

    The catalog validates it like :func:`audience_manager.rules.parse_attribute` does,
    reserved (built-in) names included.
    """

    name: str
    event_type: str
    aggregate: AttributeAggregate
    property: str | None = None
    where: list[dict[str, Any]] = Field(default_factory=list)
    within: str | None = None
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)


class AttributeRead(_ReadModel):
    """A computed attribute as the catalog holds it; ``deleted`` only in the change feed."""

    id: str
    name: str
    event_type: str
    aggregate: AttributeAggregate
    property: str | None
    where: list[dict[str, Any]]
    within: str | None
    description: str
    version: int
    created_at: Timestamp
    updated_at: Timestamp
    deleted: bool = False

    def to_attribute(self) -> ComputedAttribute:
        """The definition as the rule engine takes it."""
        fields = {"name", "event_type", "aggregate", "property", "where", "within", "description"}
        return ComputedAttribute.model_validate(self.model_dump(include=fields, by_alias=True))


class CatalogChanges(_ReadModel):
    """Everything that changed after a revision, up to and including ``revision``.

    Each segment and attribute appears once, in its latest state (``deleted`` when it was
    deleted), ordered by the revision of its last change. Pass ``revision`` to the next
    ``changes_since`` call to continue from here.
    """

    revision: int
    segments: list[SegmentRead]
    attributes: list[AttributeRead]


class Page(NamedTuple, Generic[ItemT]):
    """One page of a listing; ``next_cursor`` is ``None`` on the last page."""

    items: list[ItemT]
    next_cursor: str | None
