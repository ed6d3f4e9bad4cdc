"""A batch's commit: changes column-wise give what one record per change gave."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from audience_manager.engine import (
    Engine,
    Event,
    ManualClock,
    MembershipChange,
    MembershipChanges,
    SegmentDefinition,
)
from audience_manager.engine.documents import encode_profile, profile_records
from audience_manager.membership import IdSpace
from audience_manager.processor.projection import build_commit
from audience_manager.rules.model import parse_rules
from audience_manager.store import ChangeBlock, ChangeRecord, StateCommit
from audience_manager.store.base import DenseIds

T0 = 1_767_225_600_000


def listed(ids: Mapping[str, DenseIds]) -> dict[str, list[int]]:
    """Dense ids by segment as lists (a commit may hold arrays)."""
    return {segment: [int(d) for d in dense] for segment, dense in ids.items()}


def reference(
    engine: Engine,
    changes: Iterable[MembershipChange],
    touched: Iterable[str],
    erased: Iterable[tuple[int, str]],
    space: IdSpace,
) -> tuple[list[ChangeRecord], dict[str, set[int]], dict[str, set[int]], dict[int, bytes | None]]:
    """One record per change, as the commit was first built (profiles: touched users and
    users never seen, whose change may be the first thing stored of them)."""
    erased_ids = {user_id: dense for dense, user_id in erased}
    users = set(touched)
    log, final = [], {}
    for change in changes:
        local = engine.ids.get(change.user_id)
        if local is None:
            dense = erased_ids.get(change.user_id, -1)
        else:
            dense = space.to_store(local)
            final[(change.segment_id, dense)] = change.change == "enter"
            if engine.table.last_seen[local] == 0:  # never seen: maybe no profile yet
                users.add(change.user_id)
        log.append(ChangeRecord(change.segment_id, change.user_id, dense, change.change, change.at))
    enters: dict[str, set[int]] = {}
    exits: dict[str, set[int]] = {}
    for (segment_id, dense), entered in final.items():
        (enters if entered else exits).setdefault(segment_id, set()).add(dense)
    profiles: dict[int, bytes | None] = {}
    ordered = list(users)
    for user_id, record in zip(ordered, profile_records(engine, ordered), strict=True):
        local = engine.ids.get(user_id)
        if local is not None and record is not None:
            profiles[space.to_store(local)] = encode_profile(record)
    for user_id, dense in erased_ids.items():
        profiles[dense] = None
        log.append(ChangeRecord("", user_id, dense, "erase", engine.now))
    return log, enters, exits, profiles


def purchase(user_id: str, amount: float, at: int = T0) -> Event:
    return Event(user_id, "purchase", at, {"amount": amount})


@pytest.mark.parametrize("space", [IdSpace(), IdSpace(4, 1)])
def test_a_commit_holds_every_change_and_the_last_state_of_each_member(space: IdSpace) -> None:
    engine = Engine(ManualClock(T0))
    for segment_id, threshold in (("hv", 10), ("vip", 100)):
        rule = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": threshold}]}
        engine.upsert_segment(SegmentDefinition(segment_id, segment_id, parse_rules(rule)))
    engine.apply([purchase("old", 500)])
    changes = MembershipChanges()
    changes.extend(engine.apply([purchase(f"u{i}", 20 * i) for i in range(8)]).changes)
    erased = [(space.to_store(engine.ids.get("u3") or 0), "u3")]
    changes.extend(engine.delete_user("u3"))
    engine.clock.advance(1)  # type: ignore[attr-defined]
    changes.extend(engine.apply([purchase("u1", 200), purchase("new", 50)]).changes)
    touched = {"u1", "u5", "new", "u3"}

    commit = build_commit(engine, {0: 10}, changes, touched, erased, 11, space)

    log, enters, exits, profiles = reference(engine, list(changes), touched, erased, space)
    assert isinstance(commit.changes, ChangeBlock)
    assert commit.changes.records() == log
    assert {s: set(d) for s, d in commit.enters.items()} == enters
    assert {s: set(d) for s, d in commit.exits.items()} == exits
    assert {p.dense: p.doc for p in commit.profiles} == profiles
    assert [p.dense for p in commit.profiles if p.doc] == sorted(
        d for d, doc in profiles.items() if doc
    )
    assert (commit.positions, commit.applied, commit.now) == ({0: 10}, 11, engine.now)


def test_single_changes_are_taken_as_well() -> None:
    engine = Engine(ManualClock(T0))
    rule = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1}]}
    engine.upsert_segment(SegmentDefinition("s", "s", parse_rules(rule)))
    changes = list(engine.apply([purchase("a", 5), purchase("b", 5)]).changes)
    commit = build_commit(engine, {}, changes, ())
    assert listed(commit.enters) == {"s": [0, 1]}
    assert isinstance(commit.changes, ChangeBlock)
    assert [(r.user_id, r.change) for r in commit.changes.records()] == [
        ("a", "enter"),
        ("b", "enter"),
    ]


def test_a_batch_without_changes_commits_an_empty_block() -> None:
    engine = Engine(ManualClock(T0))
    commit = build_commit(engine, {0: 1}, MembershipChanges(), ())
    assert isinstance(commit, StateCommit)
    assert not commit.changes
    assert commit.profiles == []


def test_a_backfill_writes_memberships_and_no_profiles_of_users_seen_before() -> None:
    engine = Engine(ManualClock(T0))
    engine.apply([purchase("a", 5), purchase("b", 50)])
    rule = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1}]}
    changes = engine.upsert_segment(SegmentDefinition("s", "s", parse_rules(rule)))
    commit = build_commit(engine, {}, changes, ())
    assert listed(commit.enters) == {"s": [0, 1]}
    assert commit.profiles == []


def test_static_members_never_seen_get_a_profile() -> None:
    engine = Engine(ManualClock(T0))
    engine.upsert_segment(SegmentDefinition("list", "list", None, "STATIC"))
    engine.apply([purchase("seen", 5)])
    changes = engine.set_static_members("list", ["seen", "fresh"], mode="add")
    commit = build_commit(engine, {}, changes, ())
    assert listed(commit.enters) == {"list": [0, 1]}
    assert [(p.dense, p.user_id) for p in commit.profiles] == [(1, "fresh")]
