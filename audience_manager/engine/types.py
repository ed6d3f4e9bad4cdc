"""Values the engine takes and returns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, overload

import msgspec
import numpy as np
import numpy.typing as npt

from audience_manager.rules.model import Group

__all__ = [
    "ApplyResult",
    "ChangeRun",
    "ManualClock",
    "MembershipChange",
    "MembershipChanges",
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


class ChangeRun(NamedTuple):
    """Users entering (or leaving) one segment at one instant, by engine row and userId."""

    segment_id: str
    rows: npt.NDArray[np.int64]
    user_ids: list[str]
    entered: bool
    at: int


class MembershipChanges(Sequence[MembershipChange]):
    """Enters and exits in order, held column-wise as runs of rows.

    A cold start changes tens of memberships per event: one object per change would cost
    more than the evaluation. Readers that want single changes index or iterate; the
    processor reads :attr:`runs`. Equal to a list of the same changes.
    """

    __slots__ = ("_size", "runs")

    def __init__(self, runs: Sequence[ChangeRun] = ()) -> None:
        self.runs: list[ChangeRun] = [r for r in runs if len(r.user_ids)]
        self._size = sum(len(r.user_ids) for r in self.runs)

    def add(self, run: ChangeRun) -> None:
        """Append a run (an empty one is ignored)."""
        if len(run.user_ids):
            self.runs.append(run)
            self._size += len(run.user_ids)

    def extend(self, other: MembershipChanges) -> None:
        """Append every run of ``other``."""
        self.runs.extend(other.runs)
        self._size += other._size

    def __add__(self, other: MembershipChanges) -> MembershipChanges:
        joined = MembershipChanges(self.runs)
        joined.extend(other)
        return joined

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[MembershipChange]:
        for run in self.runs:
            change: Change = "enter" if run.entered else "exit"
            for user_id in run.user_ids:
                yield MembershipChange(run.segment_id, user_id, change, run.at)

    @overload
    def __getitem__(self, index: int) -> MembershipChange: ...
    @overload
    def __getitem__(self, index: slice) -> list[MembershipChange]: ...
    def __getitem__(self, index: int | slice) -> MembershipChange | list[MembershipChange]:
        if isinstance(index, slice):
            return list(self)[index]
        position = index + self._size if index < 0 else index
        if not 0 <= position < self._size:
            raise IndexError(index)
        for run in self.runs:
            if position < len(run.user_ids):
                change: Change = "enter" if run.entered else "exit"
                return MembershipChange(run.segment_id, run.user_ids[position], change, run.at)
            position -= len(run.user_ids)
        raise IndexError(index)  # not reached: the runs hold _size changes

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MembershipChanges | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MembershipChanges({list(self)!r})"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event of a batch the engine refused, by position, with the reason."""

    index: int
    reason: str


@dataclass(slots=True)
class ApplyResult:
    """What one ``apply`` changed: membership, which profiles, and refused events."""

    changes: MembershipChanges = field(default_factory=MembershipChanges)
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
