"""The state-store port: what the processor commits and what the APIs read.

The processor commits one :class:`StateCommit` per batch: changed profiles, membership
enters and exits, the log positions consumed and a journal entry, all or nothing. Readers
(any API replica) see whole commits only.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

__all__ = [
    "CHANGE_KINDS",
    "ChangeBlock",
    "ChangeRecord",
    "DenseIds",
    "Fenced",
    "JournalEntry",
    "ProfileWrite",
    "StateCommit",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
    "check_base",
    "numbered_block",
]


class StoreError(Exception):
    """Root of state-store errors.

    StoreError
    ├── StoreUnavailable  the backend cannot be reached; retry later
    └── Fenced            a commit's partitions moved on without it (another processor)
    """


class StoreUnavailable(StoreError):
    """The backend cannot be reached or is shutting down; the caller may retry."""


class Fenced(StoreError):
    """A commit was refused: the store's positions of its partitions are not the ones the
    batch started from, so another processor has taken them over (or this one is stale)."""


class ProfileWrite(msgspec.Struct, frozen=True, gc=False):
    """A profile as the read model stores it (``doc`` is its encoded record, None erases it)."""

    dense: int
    user_id: str
    doc: bytes | None


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One committed batch: the positions it ended at and the engine time it ran at."""

    positions: dict[int, int]
    now: int


#: Dense ids of users: a list, or an array (as the processor hands over many at once).
DenseIds = list[int] | npt.NDArray[np.int64]


@dataclass(slots=True)
class StateCommit:
    """Everything one processor batch changed, committed atomically.

    ``id`` names this commit: a backend that cannot tell whether a commit went through (its
    connection dropped) recognises a retry of it by its id and applies it only once.

    ``base`` fences writers: the positions the batch started from. A store holding other
    positions for any of those partitions refuses the commit with :class:`Fenced`, so a
    processor that lost its partitions to another can never apply a batch twice.
    """

    positions: dict[int, int]
    now: int
    profiles: list[ProfileWrite] = field(default_factory=list)
    enters: dict[str, DenseIds] = field(default_factory=dict)
    exits: dict[str, DenseIds] = field(default_factory=dict)
    replaced: dict[str, list[int]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    applied: int = 0
    changes: ChangeBlock | list[ChangeRecord] = field(default_factory=list)
    base: dict[int, int] | None = None
    id: int = field(default_factory=lambda: secrets.randbits(63))


class ChangeRecord(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One line of the membership-change log.

    ``change`` is ``enter`` or ``exit``; ``drop`` (a deleted segment, no user) and ``erase``
    (an erased user, no segment) tell readers with caches what to forget.
    """

    segment_id: str
    user_id: str
    dense: int
    change: str
    at: int


def check_base(commit: StateCommit, stored: Mapping[int, int]) -> None:
    """Raise :class:`Fenced` unless ``stored`` positions agree with the commit's base."""
    if commit.base is None:
        return
    moved = {p: stored.get(p, 0) for p, o in commit.base.items() if stored.get(p, 0) != o}
    if moved:
        expected = {p: commit.base[p] for p in moved}
        raise Fenced(f"partitions moved on: stored positions {moved}, batch started at {expected}")


#: What a change-log line says, by its code in :attr:`ChangeBlock.kind`.
CHANGE_KINDS = ("enter", "exit", "drop", "erase")


@dataclass(frozen=True, slots=True, eq=False)  # arrays: no element-wise equality
class ChangeBlock:
    """Change-log lines column-wise: line ``i`` is ``ChangeRecord(segments[segment[i]],
    user_ids[i], dense[i], CHANGE_KINDS[kind[i]], at[i])``.

    The processor writes a batch's changes as one block without an object per line, and
    readers turn only the lines they take into :class:`ChangeRecord`.

    ``keyed``: every dense id of the block (other than -1) names one user id, as the
    engine's do (they are never given to another user); the block is then stored with
    each user once, found by dense id.
    """

    segments: list[str]
    segment: npt.NDArray[np.int32]
    user_ids: list[str]
    dense: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int8]
    at: npt.NDArray[np.int64]
    keyed: bool = False

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def of(cls, records: list[ChangeRecord]) -> ChangeBlock:
        """The block of ``records``, in order."""
        segments: dict[str, int] = {}
        codes = {kind: code for code, kind in enumerate(CHANGE_KINDS)}
        segment = [segments.setdefault(r.segment_id, len(segments)) for r in records]
        return cls(
            segments=list(segments),
            segment=np.array(segment, np.int32),
            user_ids=[r.user_id for r in records],
            dense=np.array([r.dense for r in records], np.int64),
            kind=np.array([codes[r.change] for r in records], np.int8),
            at=np.array([r.at for r in records], np.int64),
        )

    @classmethod
    def concat(cls, blocks: Sequence[ChangeBlock]) -> ChangeBlock:
        """The lines of ``blocks``, one block after the other."""
        if len(blocks) == 1:
            return blocks[0]
        segments: dict[str, int] = {}
        codes = []
        user_ids: list[str] = []
        for block in blocks:
            mapping = np.array(
                [segments.setdefault(s, len(segments)) for s in block.segments] or [0], np.int32
            )
            codes.append(mapping[block.segment])
            user_ids.extend(block.user_ids)
        return cls(
            segments=list(segments),
            segment=np.concatenate(codes).astype(np.int32),
            user_ids=user_ids,
            dense=np.concatenate([b.dense for b in blocks]).astype(np.int64),
            kind=np.concatenate([b.kind for b in blocks]).astype(np.int8),
            at=np.concatenate([b.at for b in blocks]).astype(np.int64),
            keyed=all(block.keyed for block in blocks),
        )

    def slice(self, start: int, stop: int) -> ChangeBlock:
        """Lines ``start`` to ``stop`` (views of the arrays, no copies)."""
        if start == 0 and stop >= len(self):
            return self
        return ChangeBlock(
            self.segments,
            self.segment[start:stop],
            self.user_ids[start:stop],
            self.dense[start:stop],
            self.kind[start:stop],
            self.at[start:stop],
            self.keyed,
        )

    def records(self, start: int = 0, stop: int | None = None) -> list[ChangeRecord]:
        """Lines ``start`` to ``stop`` as records."""
        segments, kinds = self.segments, CHANGE_KINDS
        return [
            ChangeRecord(segments[s], user_id, dense, kinds[k], at)
            for s, user_id, dense, k, at in zip(
                self.segment[start:stop].tolist(),
                self.user_ids[start:stop],
                self.dense[start:stop].tolist(),
                self.kind[start:stop].tolist(),
                self.at[start:stop].tolist(),
                strict=True,
            )
        ]


def numbered_block(
    first: int, block: ChangeBlock, after: int, room: int
) -> tuple[int, ChangeBlock]:
    """The lines of a change-log block whose first line is number ``first`` that come after
    line ``after``, at most ``room`` of them, and the number of the first one."""
    skip = max(0, after + 1 - first)
    return first + skip, block.slice(skip, skip + room)


class StateStore(ABC):
    """Profiles and membership for readers, positions and journal for the processor."""

    # -- the processor ----------------------------------------------------------------

    @abstractmethod
    def commit(self, commit: StateCommit) -> None:
        """Apply ``commit`` atomically (replaced segments are set, then enters/exits); a
        commit with the id of the last one applied changes nothing; one whose ``base``
        disagrees with the stored positions raises :class:`Fenced` and changes nothing."""

    @abstractmethod
    def positions(self) -> dict[int, int]:
        """The log positions (next offset per partition) of the last commit."""

    @abstractmethod
    def journal(self) -> list[JournalEntry]:
        """Committed batches not yet covered by a snapshot, oldest first."""

    @abstractmethod
    def prune_journal(self, positions: Mapping[int, int]) -> None:
        """Forget journal entries a snapshot at ``positions`` includes."""

    # -- readers ----------------------------------------------------------------------

    @abstractmethod
    def profile(self, user_id: str) -> bytes | None:
        """A user's stored profile record (as the processor encoded it), or None."""

    @abstractmethod
    def user_segments(self, user_id: str) -> list[str]:
        """Segment ids a user belongs to."""

    @abstractmethod
    def members(
        self, segment_id: str, after: int | None, limit: int
    ) -> tuple[list[str], int | None]:
        """User ids of a segment in stable order after a cursor, and the next cursor."""

    @abstractmethod
    def bitmap(self, segment_id: str) -> BitMap:
        """The dense ids of a segment's members (for counts, overlap, audiences)."""

    @abstractmethod
    def users(self, after: int = -1) -> BitMap:
        """Dense ids of stored profiles above ``after`` (new users only ever get higher ids;
        erasures appear in the change log as ``erase`` lines)."""

    @abstractmethod
    def sizes(self) -> dict[str, int]:
        """Member count of every segment with members."""

    @abstractmethod
    def applied(self) -> int:
        """How many events have been applied in total."""

    def changes_since(self, sequence: int, limit: int = 10_000) -> list[tuple[int, ChangeRecord]]:
        """Membership-change log lines after ``sequence``, oldest first, with their numbers."""
        return [
            (first + i, record)
            for first, block in self.change_blocks_since(sequence, limit)
            for i, record in enumerate(block.records())
        ]

    @abstractmethod
    def change_blocks_since(
        self, sequence: int, limit: int = 10_000
    ) -> list[tuple[int, ChangeBlock]]:
        """The change-log lines after ``sequence`` (at most ``limit``), oldest first, as
        blocks with the number of each block's first line."""

    @abstractmethod
    def last_change(self) -> int:
        """The number of the newest membership-change log line (0 when there is none)."""

    @abstractmethod
    def trim_changes(self, through: int) -> None:
        """Forget the change-log blocks whose lines are all numbered ``through`` or below,
        except the newest block: a reader that asks for lines after a forgotten one then
        sees the gap (its first line is numbered beyond the one it asked after)."""

    @abstractmethod
    def marker(self, name: str) -> int:
        """A named counter the processor keeps beside its state (0 until set)."""

    @abstractmethod
    def set_marker(self, name: str, value: int) -> None:
        """Store a named counter (outside any commit)."""

    # -- requests the processor answers (it holds the engine) -----------------------

    @abstractmethod
    def submit(self, kind: str, payload: bytes, partition: int | None = None) -> str:
        """Queue a request for the processor (for the one holding ``partition``, when the
        processors share the partitions); returns its id."""

    @abstractmethod
    def pending(
        self, limit: int = 16, partitions: Collection[int] | None = None
    ) -> list[tuple[str, str, bytes]]:
        """Unanswered requests, oldest first: (id, kind, payload). Without ``partitions``
        the requests addressed to no partition, else those addressed to one of them."""

    @abstractmethod
    def respond(self, request_id: str, response: bytes) -> None:
        """Record the answer to a request."""

    @abstractmethod
    def response(self, request_id: str) -> bytes | None:
        """The answer to a request, once there is one."""

    @abstractmethod
    def close(self) -> None: ...
