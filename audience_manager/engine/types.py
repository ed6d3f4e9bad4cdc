"""Values the engine takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from audience_manager.rules.model import Group

__all__ = [
    "ApplyResult",
    "ManualClock",
    "MembershipChange",
    "Rejection",
    "SegmentDefinition",
]

SegmentType = Literal["DYNAMIC", "STATIC"]
Change = Literal["enter", "exit"]


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    """A segment as the engine needs it: rules for DYNAMIC, none for STATIC."""

    id: str
    name: str
    rules: Group | None = None
    type: SegmentType = "DYNAMIC"


class MembershipChange(msgspec.Struct, frozen=True, gc=False):
    """A user entering or leaving a segment at engine time ``at`` (epoch ms)."""

    segment_id: str
    user_id: str
    change: Change
    at: int

    def to_json(self) -> dict[str, Any]:
        """The change record of the membership-change log."""
        return {
            "segmentId": self.segment_id,
            "userId": self.user_id,
            "change": self.change,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event of a batch the engine refused, by position, with the reason."""

    index: int
    reason: str


@dataclass(slots=True)
class ApplyResult:
    """What one ``apply`` changed: membership, which profiles, and refused events."""

    changes: list[MembershipChange] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class ManualClock:
    """A clock for tests and replays: returns ``now`` (epoch ms) until moved."""

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` and return the new time."""
        self.now += ms
        return self.now
