"""From engine results to a state-store commit: profiles and membership deltas.

Changes stay column-wise from the engine to the store: a batch that changes millions of
memberships builds a few arrays per segment, not an object per change.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from audience_manager.engine import ChangeRun, Engine, MembershipChange, MembershipChanges
from audience_manager.engine.documents import encoded_rows
from audience_manager.membership import IdSpace
from audience_manager.store import ChangeBlock, ProfileWrite, StateCommit
from audience_manager.store.base import CHANGE_KINDS, DenseIds

__all__ = ["build_commit", "merge_commits"]

WHOLE_LOG = IdSpace()  # one engine for every partition

_ENTER, _EXIT, _ERASE = (np.int8(CHANGE_KINDS.index(k)) for k in ("enter", "exit", "erase"))
_EMPTY = np.zeros(0, dtype=np.int64)

Rows = npt.NDArray[np.int64]


def build_commit(
    engine: Engine,
    positions: Mapping[int, int],
    changes: Iterable[MembershipChange],
    touched: Iterable[str],
    erased: Iterable[tuple[int, str]] = (),
    applied: int = 0,
    space: IdSpace = WHOLE_LOG,
) -> StateCommit:
    """The commit for one batch: every touched profile, every enter and exit, the log.

    Dense ids are the engine's; the commit carries the store's (``space``), and so do
    ``erased`` ids."""
    erased_ids = {user_id: dense for dense, user_id in erased}
    runs = _runs(engine, changes)
    stride, offset = space
    segments: dict[str, int] = {}
    columns: list[tuple[int, Rows, list[str], np.int8, int]] = []
    # Per segment, the rows of users still known and whether each run entered them.
    final: dict[str, list[tuple[Rows, bool]]] = {}
    changed: list[Rows] = []
    for run in runs:
        index = segments.setdefault(run.segment_id, len(segments))
        rows = run.rows
        dense = rows * stride + offset
        gone = _gone(engine, rows) if erased_ids or (len(rows) and rows.min() < 0) else None
        if gone is not None and gone.any():  # erased in this batch: its rows go with the erasure
            for i in np.flatnonzero(rows < 0).tolist():
                dense[i] = erased_ids.get(run.user_ids[i], -1)
            rows = rows[~gone]
        columns.append((index, dense, run.user_ids, _ENTER if run.entered else _EXIT, run.at))
        if len(rows):
            final.setdefault(run.segment_id, []).append((rows * stride + offset, run.entered))
            changed.append(rows)
    enters, exits = _final_state(final)
    for user_id, erased_dense in erased_ids.items():
        index = segments.setdefault("", len(segments))
        columns.append((index, np.array([erased_dense], np.int64), [user_id], _ERASE, engine.now))
    profiles = _profiles(engine, touched, changed, space)
    profiles += [ProfileWrite(d, user_id, None) for user_id, d in erased_ids.items()]
    return StateCommit(
        positions=dict(positions),
        now=engine.now,
        profiles=profiles,
        enters=enters,
        exits=exits,
        applied=applied,
        changes=_block(segments, columns),
    )


def _runs(engine: Engine, changes: Iterable[MembershipChange]) -> list[ChangeRun]:
    """The runs of ``changes``; single changes get their rows from the engine (-1 for
    users it no longer knows)."""
    if isinstance(changes, MembershipChanges):
        return changes.runs
    get = engine.ids.get
    return [
        ChangeRun(
            c.segment_id,
            np.array([_row(get(c.user_id))], np.int64),
            [c.user_id],
            c.change == "enter",
            c.at,
        )
        for c in changes
    ]


def _row(local: int | None) -> int:
    return -1 if local is None else local


def _gone(engine: Engine, rows: Rows) -> npt.NDArray[np.bool_]:
    """Which rows belong to users erased since (their ids are released)."""
    gone = rows < 0
    known = ~gone
    gone[known] = engine.ids.released(rows[known])
    return gone


def _final_state(
    final: dict[str, list[tuple[Rows, bool]]],
) -> tuple[dict[str, DenseIds], dict[str, DenseIds]]:
    """Enters and exits per segment: a user may leave and re-enter within one batch, and
    the last change is the state."""
    enters: dict[str, DenseIds] = {}
    exits: dict[str, DenseIds] = {}
    for segment_id, parts in final.items():
        if len(parts) == 1:
            dense, entered = parts[0]
            (enters if entered else exits)[segment_id] = dense
            continue
        every = np.concatenate([dense for dense, _ in parts])
        flags = np.concatenate([np.full(len(dense), entered) for dense, entered in parts])
        # The first occurrence in reverse order is each user's last change.
        _, first = np.unique(every[::-1], return_index=True)
        last = len(every) - 1 - first
        ids, held = every[last], flags[last]
        if held.any():
            enters[segment_id] = ids[held]
        if not held.all():
            exits[segment_id] = ids[~held]
    return enters, exits


def _profiles(
    engine: Engine, touched: Iterable[str], changed: list[Rows], space: IdSpace
) -> list[ProfileWrite]:
    """The records of touched users and of users known only as static members, by dense id.

    A membership change alone leaves a profile's record as it was: readers take segments
    from the membership rows, which every change updates. Users who never had an event
    get theirs, as that may be their first."""
    ids = engine.ids
    users = ids.rows(touched if isinstance(touched, Collection) else list(touched))
    # A mask over every row rather than np.unique: there are many more changes than users.
    chosen = np.zeros(ids.capacity, dtype=np.bool_)
    chosen[users[users >= 0]] = True
    unseen = engine.table.last_seen == 0
    for rows in changed:
        chosen[rows[unseen[rows]]] = True
    rows = np.flatnonzero(chosen)
    if not len(rows):
        return []
    docs = encoded_rows(engine, rows)
    stride, offset = space
    dense = (rows * stride + offset).tolist()
    return list(map(ProfileWrite, dense, ids.user_ids(rows), docs))


def _block(
    segments: dict[str, int], columns: list[tuple[int, Rows, list[str], np.int8, int]]
) -> ChangeBlock:
    if not columns:
        return ChangeBlock([], _EMPTY.astype(np.int32), [], _EMPTY, _EMPTY.astype(np.int8), _EMPTY)
    sizes = [len(users) for _, _, users, _, _ in columns]
    user_ids: list[str] = []
    for _, _, users, _, _ in columns:
        user_ids.extend(users)
    return ChangeBlock(
        segments=list(segments),
        segment=np.repeat(np.array([c[0] for c in columns], np.int32), sizes),
        user_ids=user_ids,
        dense=np.concatenate([c[1] for c in columns]),
        kind=np.repeat(np.array([c[3] for c in columns], np.int8), sizes),
        at=np.repeat(np.array([c[4] for c in columns], np.int64), sizes),
        keyed=True,  # the engine's dense ids, each naming one user
    )


def merge_commits(commits: Sequence[StateCommit]) -> StateCommit:
    """One commit for the batches of several tasks (over different partitions and users)
    at the same engine time."""
    if len(commits) == 1:
        return commits[0]
    merged = StateCommit(positions={}, now=max(c.now for c in commits))
    blocks: list[ChangeBlock] = []
    enters: dict[str, list[Rows]] = {}
    exits: dict[str, list[Rows]] = {}
    for commit in commits:
        if commit.replaced or commit.dropped:
            raise ValueError("replacements and drops are committed on their own")
        merged.positions.update(commit.positions)
        merged.profiles.extend(commit.profiles)
        for mine, theirs in ((enters, commit.enters), (exits, commit.exits)):
            for segment_id, dense in theirs.items():
                mine.setdefault(segment_id, []).append(np.asarray(dense, np.int64))
        merged.applied += commit.applied
        changes = commit.changes
        blocks.append(changes if isinstance(changes, ChangeBlock) else ChangeBlock.of(changes))
    merged.enters = {s: np.concatenate(parts) for s, parts in enters.items()}
    merged.exits = {s: np.concatenate(parts) for s, parts in exits.items()}
    merged.profiles.sort(key=lambda p: p.dense)
    merged.changes = ChangeBlock.concat(blocks)
    return merged
