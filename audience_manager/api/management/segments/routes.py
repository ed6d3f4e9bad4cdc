"""``/api/segments``: definitions, previews, members, exports and STATIC uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from audience_manager.api.management.deps import (
    ADMIN,
    READ,
    MemberServiceDep,
    SegmentServiceDep,
)
from audience_manager.api.management.schemas import ERROR_RESPONSES
from audience_manager.api.management.segments.members import ExportFormat
from audience_manager.api.management.segments.schemas import (
    DEFAULT_MEMBER_PAGE,
    MAX_MEMBER_PAGE,
    MemberCount,
    MemberPage,
    MemberUpload,
    PreviewRequest,
    PreviewResponse,
    SegmentPage,
    SegmentResponse,
)
from audience_manager.catalog.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from audience_manager.catalog.schemas import SegmentCreate

__all__ = [
    "add_members",
    "create_segment",
    "delete_segment",
    "export_members",
    "get_segment",
    "list_members",
    "list_segments",
    "preview_segment",
    "remove_members",
    "replace_members",
    "replace_segment",
    "router",
]

router = APIRouter(prefix="/api/segments", responses=ERROR_RESPONSES)

SegmentLimit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Segments per page.")]
MemberLimit = Annotated[int, Query(ge=1, le=MAX_MEMBER_PAGE, description="Members per page.")]
Cursor = Annotated[str | None, Query(description="`nextCursor` of the previous page.")]
SegmentIdPath = Annotated[str, Path(alias="id", description="Segment id (or name).")]


@router.post("", status_code=201, tags=["segments"], dependencies=ADMIN)
def create_segment(body: SegmentCreate, service: SegmentServiceDep) -> SegmentResponse:
    """Create a segment; a DYNAMIC one is `BUILDING` until it is backfilled."""
    return service.create(body)


@router.get("", tags=["segments"], dependencies=READ)
def list_segments(
    service: SegmentServiceDep, limit: SegmentLimit = DEFAULT_PAGE_SIZE, cursor: Cursor = None
) -> SegmentPage:
    """Segments in creation order, with cursor pagination."""
    return service.list_segments(limit, cursor)


@router.post("/preview", tags=["segments"], dependencies=READ)
async def preview_segment(body: PreviewRequest, service: SegmentServiceDep) -> PreviewResponse:
    """Size and a sample of the users an unsaved rule matches now."""
    return await service.preview(body.rules, body.sample)


@router.get("/{id}", tags=["segments"], dependencies=READ)
def get_segment(segment_id: SegmentIdPath, service: SegmentServiceDep) -> SegmentResponse:
    """A segment with its status and current size."""
    return service.get(segment_id)


@router.put("/{id}", tags=["segments"], dependencies=ADMIN)
def replace_segment(
    segment_id: SegmentIdPath, body: SegmentCreate, service: SegmentServiceDep
) -> SegmentResponse:
    """Replace a whole segment; its version goes up."""
    return service.replace(segment_id, body)


@router.delete(
    "/{id}", status_code=204, response_class=Response, tags=["segments"], dependencies=ADMIN
)
def delete_segment(segment_id: SegmentIdPath, service: SegmentServiceDep) -> Response:
    """Delete a segment that no other segment references."""
    service.delete(segment_id)
    return Response(status_code=204)


@router.get("/{id}/members", tags=["members"], dependencies=READ)
def list_members(
    segment_id: SegmentIdPath,
    service: MemberServiceDep,
    limit: MemberLimit = DEFAULT_MEMBER_PAGE,
    cursor: Cursor = None,
) -> MemberPage:
    """Members in a stable order, with an opaque cursor."""
    return service.page(segment_id, limit, cursor)


@router.get(
    "/{id}/export",
    tags=["members"],
    dependencies=READ,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def export_members(
    segment_id: SegmentIdPath,
    service: MemberServiceDep,
    file_format: Annotated[ExportFormat, Query(alias="format")] = "csv",
) -> StreamingResponse:
    """Every member, streamed as CSV (header `userId`) or NDJSON."""
    export = service.export(segment_id, file_format)
    disposition = f'attachment; filename="{export.filename}"'
    return StreamingResponse(
        export.chunks, media_type=export.media_type, headers={"Content-Disposition": disposition}
    )


@router.put("/{id}/members", tags=["members"], dependencies=ADMIN)
async def replace_members(
    segment_id: SegmentIdPath, body: MemberUpload, service: MemberServiceDep
) -> MemberCount:
    """Set the members of a STATIC segment."""
    return await service.upload(segment_id, "replace", body.user_ids)


@router.post("/{id}/members", tags=["members"], dependencies=ADMIN)
async def add_members(
    segment_id: SegmentIdPath, body: MemberUpload, service: MemberServiceDep
) -> MemberCount:
    """Add members to a STATIC segment."""
    return await service.upload(segment_id, "add", body.user_ids)


@router.delete("/{id}/members", tags=["members"], dependencies=ADMIN)
async def remove_members(
    segment_id: SegmentIdPath, body: MemberUpload, service: MemberServiceDep
) -> MemberCount:
    """Remove members from a STATIC segment."""
    return await service.upload(segment_id, "remove", body.user_ids)
