"""From engine results to a state-store commit: profiles and membership deltas."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from audience_manager.engine import Engine, MembershipChange
from audience_manager.engine.documents import encode_profile, profile_records
from audience_manager.membership import IdSpace
from audience_manager.store import ChangeRecord, ProfileWrite, StateCommit

__all__ = ["build_commit", "merge_commits"]

WHOLE_LOG = IdSpace()  # one engine for every partition


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
    users = set(touched)
    log: list[ChangeRecord] = []
    # A user may leave and re-enter within one batch: the last change is the state.
    final: dict[tuple[str, int], bool] = {}
    ids = engine.ids
    changes = list(changes)
    stride, offset = space
    for change, local in zip(changes, ids.get_many([c.user_id for c in changes]), strict=True):
        if local is None:  # erased in this batch: its rows go with the erasure
            dense = erased_ids.get(change.user_id, -1)
        else:
            dense = local * stride + offset
            final[(change.segment_id, dense)] = change.change == "enter"
            users.add(change.user_id)
        log.append(ChangeRecord(change.segment_id, change.user_id, dense, change.change, change.at))
    enters: dict[str, list[int]] = {}
    exits: dict[str, list[int]] = {}
    for (segment_id, dense), entered in final.items():
        (enters if entered else exits).setdefault(segment_id, []).append(dense)
    profiles = []
    ordered = list(users)  # the store writes them in dense id order
    records = profile_records(engine, ordered)
    for user_id, local, record in zip(ordered, ids.get_many(ordered), records, strict=True):
        if local is not None and record is not None:
            # Readers take segments from the membership rows, which every change updates.
            profiles.append(ProfileWrite(local * stride + offset, user_id, encode_profile(record)))
    for user_id, dense in erased_ids.items():
        profiles.append(ProfileWrite(dense, user_id, None))
        log.append(ChangeRecord("", user_id, dense, "erase", engine.now))
    return StateCommit(
        positions=dict(positions),
        now=engine.now,
        profiles=profiles,
        enters=enters,
        exits=exits,
        applied=applied,
        changes=log,
    )


def merge_commits(commits: Sequence[StateCommit]) -> StateCommit:
    """One commit for the batches of several tasks (over different partitions and users)
    at the same engine time."""
    if len(commits) == 1:
        return commits[0]
    merged = StateCommit(positions={}, now=max(c.now for c in commits))
    for commit in commits:
        if commit.replaced or commit.dropped:
            raise ValueError("replacements and drops are committed on their own")
        merged.positions.update(commit.positions)
        merged.profiles.extend(commit.profiles)
        for mine, theirs in ((merged.enters, commit.enters), (merged.exits, commit.exits)):
            for segment_id, dense in theirs.items():
                mine.setdefault(segment_id, []).extend(dense)
        merged.applied += commit.applied
        merged.changes.extend(commit.changes)
    merged.profiles.sort(key=lambda p: p.dense)
    return merged
