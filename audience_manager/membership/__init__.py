"""Membership: dense user ids, one Roaring bitmap per segment, audience algebra.

Pure in-memory structures; persistence and I/O live elsewhere.
"""

from audience_manager.membership.audience import (
    MAX_AUDIENCE_DEPTH,
    MAX_AUDIENCE_SEGMENTS,
    MAX_SEGMENT_KEY_LENGTH,
    AndExpression,
    AudienceError,
    AudienceExpression,
    NotExpression,
    OrExpression,
    SegmentReference,
    count,
    evaluate,
    parse_audience,
    segment_ids,
)
from audience_manager.membership.bitmaps import SegmentMembership, UnknownSegment
from audience_manager.membership.ids import MAX_USER_IDS, IdSpace, UserIds

__all__ = [
    "MAX_AUDIENCE_DEPTH",
    "MAX_AUDIENCE_SEGMENTS",
    "MAX_SEGMENT_KEY_LENGTH",
    "MAX_USER_IDS",
    "AndExpression",
    "AudienceError",
    "AudienceExpression",
    "IdSpace",
    "NotExpression",
    "OrExpression",
    "SegmentMembership",
    "SegmentReference",
    "UnknownSegment",
    "UserIds",
    "count",
    "evaluate",
    "parse_audience",
    "segment_ids",
]
