"""``/api/attributes``: computed attribute definitions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from audience_manager.api.management.attributes.schemas import AttributePage, AttributeResponse
from audience_manager.api.management.deps import ADMIN, READ, AttributeServiceDep
from audience_manager.api.management.schemas import ERROR_RESPONSES
from audience_manager.catalog.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from audience_manager.catalog.schemas import AttributeCreate

__all__ = [
    "create_attribute",
    "delete_attribute",
    "get_attribute",
    "list_attributes",
    "replace_attribute",
    "router",
]

router = APIRouter(prefix="/api/attributes", tags=["attributes"], responses=ERROR_RESPONSES)

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Attributes per page.")]
Cursor = Annotated[str | None, Query(description="`nextCursor` of the previous page.")]


@router.get("", dependencies=READ)
def list_attributes(
    service: AttributeServiceDep, limit: Limit = DEFAULT_PAGE_SIZE, cursor: Cursor = None
) -> AttributePage:
    """Computed attributes in creation order, with cursor pagination."""
    return service.list_attributes(limit, cursor)


@router.post("", status_code=201, dependencies=ADMIN)
def create_attribute(body: AttributeCreate, service: AttributeServiceDep) -> AttributeResponse:
    """Define a computed attribute; it is computed over past events too."""
    return service.create(body)


@router.get("/{name}", dependencies=READ)
def get_attribute(name: str, service: AttributeServiceDep) -> AttributeResponse:
    """A computed attribute by name."""
    return service.get(name)


@router.put("/{name}", dependencies=ADMIN)
def replace_attribute(
    name: str, body: AttributeCreate, service: AttributeServiceDep
) -> AttributeResponse:
    """Replace a computed attribute's definition; its name stays."""
    return service.replace(name, body)


@router.delete("/{name}", status_code=204, response_class=Response, dependencies=ADMIN)
def delete_attribute(name: str, service: AttributeServiceDep) -> Response:
    """Delete a computed attribute that no segment uses."""
    service.delete(name)
    return Response(status_code=204)
