"""Apply events to profiles and membership; advance time; backfill; explain (pure)."""

from audience_manager.engine.engine import Engine
from audience_manager.engine.events import Event
from audience_manager.engine.types import (
    ApplyResult,
    ChangeRun,
    ManualClock,
    MembershipChange,
    MembershipChanges,
    Rejection,
    SegmentDefinition,
)

__all__ = [
    "ApplyResult",
    "ChangeRun",
    "Engine",
    "Event",
    "ManualClock",
    "MembershipChange",
    "MembershipChanges",
    "Rejection",
    "SegmentDefinition",
]
