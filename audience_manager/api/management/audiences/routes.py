"""``/api/audiences/count`` and ``/api/segments/overlap``: algebra over segments."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from audience_manager.api.management.audiences.schemas import AudienceCount, Overlap
from audience_manager.api.management.deps import READ, AudienceServiceDep
from audience_manager.api.management.schemas import ERROR_RESPONSES

__all__ = [
    "count_audience",
    "router",
    "segment_overlap",
]

router = APIRouter(tags=["audiences"], dependencies=READ, responses=ERROR_RESPONSES)

_EXAMPLES: dict[str, Any] = {
    "wrapped": {
        "summary": "An expression in a wrapper",
        "value": {"expression": {"and": ["High Value Users", {"not": "Churned"}]}},
    },
    "bare": {
        "summary": "The expression itself",
        "value": {"or": ["seg_0123456789abcdef", "Newsletter"]},
    },
}


@router.post("/api/audiences/count")
def count_audience(
    service: AudienceServiceDep,
    body: Annotated[Any, Body(openapi_examples=_EXAMPLES)],
) -> AudienceCount:
    """Count `{"and": [...]}`, `{"or": [...]}`, `{"not": ...}` over segments (ids or
    names); `not` is relative to every user with a profile."""
    return service.count(body)


@router.get("/api/segments/overlap")
def segment_overlap(
    service: AudienceServiceDep,
    ids: Annotated[str, Query(description="Comma-separated segment ids or names.")],
) -> Overlap:
    """How many users each pair of segments shares."""
    return service.overlap(ids)
