"""``/api/users``: profiles, segments, erasure and explanations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse

from audience_manager.api.management.deps import ADMIN, READ, UserServiceDep
from audience_manager.api.management.schemas import ERROR_RESPONSES
from audience_manager.api.management.users.schemas import (
    ErasureScheduled,
    UserProfile,
    UserSegments,
)

__all__ = [
    "erase_user",
    "explain_membership",
    "get_user",
    "get_user_segments",
    "router",
]

router = APIRouter(prefix="/api/users", tags=["users"], responses=ERROR_RESPONSES)

UserIdPath = Annotated[str, Path(alias="userId", min_length=1, max_length=256)]
SegmentIdPath = Annotated[str, Path(alias="segmentId")]


@router.get("/{userId}", dependencies=READ)
def get_user(user_id: UserIdPath, service: UserServiceDep) -> UserProfile:
    """A user's traits, computed attributes, segments and first/last seen."""
    return service.profile(user_id)


@router.delete(
    "/{userId}",
    status_code=204,
    response_class=Response,
    dependencies=ADMIN,
    responses={202: {"model": ErasureScheduled, "description": "Erasure not applied yet"}},
)
async def erase_user(user_id: UserIdPath, service: UserServiceDep) -> Response:
    """Erase everything about a user: 204 once applied, 202 while still on its way."""
    if await service.erase(user_id):
        return Response(status_code=204)
    return JSONResponse(ErasureScheduled().model_dump(), status_code=202)


@router.get("/{userId}/segments", dependencies=READ)
def get_user_segments(user_id: UserIdPath, service: UserServiceDep) -> UserSegments:
    """The segments a user belongs to."""
    return service.segments(user_id)


@router.get("/{userId}/segments/{segmentId}/explain", dependencies=READ)
async def explain_membership(
    user_id: UserIdPath, segment_id: SegmentIdPath, service: UserServiceDep
) -> dict[str, Any]:
    """Which of a segment's conditions hold for a user, and the values compared."""
    return await service.explain(user_id, segment_id)
