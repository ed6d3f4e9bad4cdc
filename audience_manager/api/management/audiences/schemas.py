"""Bodies of the audience endpoints: counts and overlaps."""

from __future__ import annotations

from audience_manager.api.management.schemas import ApiModel

__all__ = ["AudienceCount", "Overlap"]


class AudienceCount(ApiModel):
    """How many users an audience expression selects."""

    count: int


class Overlap(ApiModel):
    """Pairwise overlaps: ``matrix[i][j]`` users are in both ``segments[i]`` and
    ``segments[j]``; the diagonal holds each segment's size."""

    segments: list[str]
    matrix: list[list[int]]
