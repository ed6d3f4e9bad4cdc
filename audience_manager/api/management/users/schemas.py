"""Bodies of the user endpoints: profiles and the segments a user is in."""

from __future__ import annotations

from typing import Any

from audience_manager.api.management.schemas import ApiModel

__all__ = ["ErasureScheduled", "SegmentName", "UserProfile", "UserSegments"]


class SegmentName(ApiModel):
    """A segment a user belongs to."""

    id: str
    name: str


class UserProfile(ApiModel):
    """A user's profile: traits, computed attributes, segments, first and last seen."""

    user_id: str
    traits: dict[str, Any]
    attributes: dict[str, Any]
    segments: list[SegmentName]
    first_seen: str | None
    last_seen: str | None


class UserSegments(ApiModel):
    """The segments a user belongs to."""

    user_id: str
    segments: list[SegmentName]


class ErasureScheduled(ApiModel):
    """An erasure accepted but not yet applied when the response was sent."""

    status: str = "scheduled"
