"""Bodies of the computed-attribute endpoints."""

from __future__ import annotations

from typing import Any

from audience_manager.api.management.schemas import ApiModel
from audience_manager.catalog.schemas import AttributeRead, Timestamp
from audience_manager.rules.attributes import AttributeAggregate

__all__ = ["AttributePage", "AttributeResponse"]


class AttributeResponse(ApiModel):
    """A computed attribute as defined in the catalog."""

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

    @classmethod
    def of(cls, attribute: AttributeRead) -> AttributeResponse:
        """The response for a catalog attribute."""
        return cls.model_validate(attribute.model_dump(exclude={"deleted"}))


class AttributePage(ApiModel):
    """One page of ``GET /api/attributes``; ``nextCursor`` is null on the last page."""

    items: list[AttributeResponse]
    next_cursor: str | None
