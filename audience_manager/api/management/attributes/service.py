"""Computed attributes: definitions kept in the catalog, computed by the processor."""

from __future__ import annotations

from audience_manager.api.management.attributes.schemas import AttributePage, AttributeResponse
from audience_manager.catalog.schemas import AttributeCreate
from audience_manager.catalog.service import CatalogService

__all__ = ["AttributeService"]


class AttributeService:
    """Create, read, list, replace and delete computed attributes.

    Built-ins (``totalSpent``, ``purchaseCount``, ...) are reserved names, not entries.
    """

    def __init__(self, catalog: CatalogService) -> None:
        self._catalog = catalog

    def create(self, data: AttributeCreate) -> AttributeResponse:
        """Define an attribute; the processor computes it over past events too."""
        return AttributeResponse.of(self._catalog.create_attribute(data))

    def get(self, name: str) -> AttributeResponse:
        """An attribute by name."""
        return AttributeResponse.of(self._catalog.get_attribute(name))

    def list_attributes(self, limit: int, cursor: str | None) -> AttributePage:
        """Attributes in creation order, a page at a time."""
        page = self._catalog.list_attributes(limit, cursor)
        items = [AttributeResponse.of(attribute) for attribute in page.items]
        return AttributePage(items=items, next_cursor=page.next_cursor)

    def replace(self, name: str, data: AttributeCreate) -> AttributeResponse:
        """Replace an attribute's definition (its name stays)."""
        return AttributeResponse.of(self._catalog.replace_attribute(name, data))

    def delete(self, name: str) -> None:
        """Delete an attribute no segment uses."""
        self._catalog.delete_attribute(name)
