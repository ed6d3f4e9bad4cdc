"""Bodies of the segment endpoints: segments, previews and member lists."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from audience_manager.api.management.schemas import ApiModel
from audience_manager.catalog.schemas import SegmentRead, SegmentStatus, SegmentType, Timestamp

__all__ = [
    "DEFAULT_MEMBER_PAGE",
    "MAX_MEMBER_PAGE",
    "MAX_PREVIEW_SAMPLE",
    "MAX_UPLOAD",
    "MemberCount",
    "MemberPage",
    "MemberUpload",
    "PreviewRequest",
    "PreviewResponse",
    "SegmentPage",
    "SegmentResponse",
    "UserId",
]

DEFAULT_MEMBER_PAGE = 1_000
MAX_MEMBER_PAGE = 10_000
MAX_UPLOAD = 100_000
MAX_PREVIEW_SAMPLE = 1_000

UserId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class SegmentResponse(ApiModel):
    """A segment with its current size (live from the state store when it has one)."""

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

    @classmethod
    def of(cls, segment: SegmentRead, sizes: dict[str, int]) -> SegmentResponse:
        """The response for a catalog segment, sized from ``sizes`` when it is there."""
        fields = segment.model_dump(exclude={"deleted"})
        fields["size"] = sizes.get(segment.id, segment.size)
        return cls.model_validate(fields)


class SegmentPage(ApiModel):
    """One page of ``GET /api/segments``; ``nextCursor`` is null on the last page."""

    items: list[SegmentResponse]
    next_cursor: str | None


class PreviewRequest(ApiModel):
    """An unsaved rule to size, and how many matching user ids to return."""

    rules: dict[str, Any]
    sample: int = Field(default=10, ge=0, le=MAX_PREVIEW_SAMPLE)


class PreviewResponse(ApiModel):
    """How many users the rule matches now, and some of them."""

    size: int
    sample: list[str]


class MemberPage(ApiModel):
    """One page of members; pass ``nextCursor`` back as ``cursor`` for the next one."""

    members: list[str]
    next_cursor: str | None


class MemberUpload(ApiModel):
    """User ids to add to, remove from or set as the members of a STATIC segment."""

    user_ids: list[UserId] = Field(max_length=MAX_UPLOAD)


class MemberCount(ApiModel):
    """A STATIC segment's size after an upload."""

    size: int
