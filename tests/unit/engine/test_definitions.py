"""Segment and attribute definitions over time: redefinition, history replay, backfill."""

from __future__ import annotations

import numpy as np
import pytest

from audience_manager.engine import (
    ChangeRun,
    Engine,
    Event,
    ManualClock,
    MembershipChange,
    MembershipChanges,
    SegmentDefinition,
)
from audience_manager.engine.documents import encode_profiles, encoded_rows, row_records
from audience_manager.rules.attributes import ComputedAttribute
from audience_manager.rules.model import parse_rules

T0 = 1_767_225_600_000
HOUR = 3_600_000


def purchases(*amounts: float, user: str = "u1") -> list[Event]:
    return [Event(user, "purchase", T0, {"amount": a}) for a in amounts]


def count_rule(n: int) -> dict[str, object]:
    return {"conditions": [{"event": "purchase", "count": {"operator": "gte", "value": n}}]}


def test_redefining_a_segment_keeps_the_state_of_aggregates_it_still_uses() -> None:
    engine = Engine(ManualClock(T0))
    engine.upsert_segment(SegmentDefinition("s", "Two purchases", parse_rules(count_rule(2))))
    engine.apply(purchases(10, 15))
    assert engine.members("s") == {"u1"}

    engine.upsert_segment(SegmentDefinition("s", "Renamed", parse_rules(count_rule(2))))

    assert engine.members("s") == {"u1"}
    assert engine.segment_id("Renamed") == "s"


def test_changing_a_rule_reevaluates_everyone() -> None:
    engine = Engine(ManualClock(T0))
    engine.upsert_segment(SegmentDefinition("s", "S", parse_rules(count_rule(2))))
    engine.apply(purchases(10, 15) + purchases(5, user="u2"))

    changes = engine.upsert_segment(SegmentDefinition("s", "S", parse_rules(count_rule(3))))

    assert {(c.user_id, c.change) for c in changes} == {("u1", "exit")}
    assert engine.members("s") == set()


def test_a_new_event_condition_counts_the_replayed_history() -> None:
    engine = Engine(ManualClock(T0))
    history = [purchases(10, 15), purchases(1, user="u2")]
    for batch in history:
        engine.apply(batch)

    priced = {"event": "purchase", "where": [{"field": "amount", "operator": "gt", "value": 0}]}
    large = {"event": "purchase", "where": [{"field": "amount", "operator": "gte", "value": 10}]}
    without = engine.upsert_segment(
        SegmentDefinition("a", "A", parse_rules({"conditions": [large]}))
    )
    with_history = engine.upsert_segment(
        SegmentDefinition("b", "B", parse_rules({"conditions": [priced]})), history=history
    )

    assert without == []  # its aggregate started empty: no history was given
    assert {c.user_id for c in with_history} == {"u1", "u2"}
    assert engine.members("b") == {"u1", "u2"}


def test_an_event_condition_equal_to_a_builtin_shares_its_history() -> None:
    engine = Engine(ManualClock(T0))
    engine.apply(purchases(10, 15))

    # "count purchase" is the aggregate behind purchaseCount, which saw every event.
    engine.upsert_segment(SegmentDefinition("a", "A", parse_rules(count_rule(2))))

    assert engine.members("a") == {"u1"}


def test_history_is_not_counted_twice_by_a_shared_aggregate() -> None:
    engine = Engine(ManualClock(T0))
    engine.upsert_segment(SegmentDefinition("a", "A", parse_rules(count_rule(2))))
    history = [purchases(10, 15)]
    engine.apply(history[0])

    # Same aggregate as "a": it already counted these events and must not see them again.
    engine.upsert_segment(SegmentDefinition("b", "B", parse_rules(count_rule(3))), history=history)

    assert engine.members("b") == set()


def test_a_new_computed_attribute_counts_the_replayed_history() -> None:
    engine = Engine(ManualClock(T0))
    history = [purchases(10, 15, 20)]
    engine.apply(history[0])

    engine.upsert_attribute(
        ComputedAttribute(
            name="biggest", event_type="purchase", aggregate="max", property="amount"
        ),
        history=history,
    )

    profile = engine.profile("u1")
    assert profile is not None
    assert profile["attributes"]["biggest"] == 20


def test_backfill_evaluates_every_profile() -> None:
    engine = Engine(ManualClock(T0))
    engine.apply(
        [
            Event(f"u{i}", "identify", T0, {}, {"plan": "pro" if i % 2 else "free"})
            for i in range(10)
        ]
    )
    rule = {"conditions": [{"field": "plan", "operator": "eq", "value": "pro"}]}

    changes = engine.upsert_segment(SegmentDefinition("pro", "Pro", parse_rules(rule)))

    assert {c.user_id for c in changes} == {f"u{i}" for i in range(1, 10, 2)}
    assert engine.backfill("pro") == []  # nothing changed since


def test_bulk_profiles_equal_single_profiles() -> None:
    engine = Engine(ManualClock(T0))
    engine.upsert_attribute(
        ComputedAttribute(
            name="lastCategory", event_type="purchase", aggregate="last", property="c"
        )
    )
    engine.upsert_segment(SegmentDefinition("static", "Static", type="STATIC"))
    engine.apply(
        [
            Event("a", "purchase", T0, {"amount": 10.25, "c": "books"}, {"plan": "pro"}),
            Event("b", "view", T0 + 5, {}, {"tags": ["x", None], "address": {"city": "Oslo"}}),
        ]
    )
    engine.set_static_members("static", ["never-seen"], mode="add")
    users = ["a", "b", "never-seen", "unknown"]
    expected = []
    for user in users:
        profile = engine.profile(user)
        if profile is not None:
            del profile["segments"]
        expected.append(profile)

    assert engine.profiles(users) == expected


def test_membership_changes_read_as_a_list_of_changes() -> None:
    rows = np.array([0, 1], dtype=np.int64)
    changes = MembershipChanges([ChangeRun("s", rows, ["a", "b"], True, 5)])
    changes.add(ChangeRun("t", rows[:1], ["a"], False, 6))
    changes.add(ChangeRun("t", rows[:0], [], True, 6))  # empty: ignored
    expected = [
        MembershipChange("s", "a", "enter", 5),
        MembershipChange("s", "b", "enter", 5),
        MembershipChange("t", "a", "exit", 6),
    ]
    assert changes == expected
    assert len(changes) == 3
    assert [changes[i] for i in range(-3, 3)] == expected + expected
    with pytest.raises(IndexError):
        changes[3]
    assert changes[:2] == expected[:2]
    assert changes + MembershipChanges() == expected
    assert MembershipChanges() == []


def test_segments_of_one_rule_share_its_evaluation_yet_keep_their_own_members() -> None:
    clock = ManualClock(T0)
    engine = Engine(clock)
    recent = {
        "match": "any",
        "conditions": [
            {"field": "lastSeen", "operator": "within_last", "value": "1h"},
            {"field": "vip", "operator": "eq", "value": True},
        ],
    }
    engine.upsert_segment(SegmentDefinition("a", "A", parse_rules(recent)))
    engine.upsert_segment(SegmentDefinition("b", "B", parse_rules(recent)))
    engine.apply([Event("u1", "visit", T0, {}), Event("u2", "visit", T0, {}, {"vip": True})])
    # "c" is a clone that starts empty and backfills; a rule differing by one value is not.
    engine.upsert_segment(SegmentDefinition("c", "C", parse_rules(recent)))
    other = {"conditions": [{"field": "lastSeen", "operator": "within_last", "value": "2h"}]}
    engine.upsert_segment(SegmentDefinition("d", "D", parse_rules(other)))
    assert all(engine.members(s) == {"u1", "u2"} for s in "abcd")

    clock.advance(HOUR + 1)
    left = engine.advance(clock.now)
    assert sorted((c.segment_id, c.user_id, c.change) for c in left) == [
        (s, "u1", "exit") for s in "abc"
    ]
    assert all(engine.members(s) == {"u2"} for s in "abc")
    assert engine.members("d") == {"u1", "u2"}
    engine.apply([Event("u1", "visit", clock.now, {})])
    assert all(engine.members(s) == {"u1", "u2"} for s in "abc")


def test_profiles_encoded_in_bulk_equal_their_records_encoded() -> None:
    engine = Engine(ManualClock(T0))
    engine.upsert_attribute(
        ComputedAttribute(
            name="top_amount", event_type="purchase", aggregate="max", property="amount"
        )
    )
    engine.apply(
        [
            *purchases(10, 2.5),
            Event("u2", "identify", T0 - 5, {}, {"plan": "pro", "tags": ["a", {"b": None}]}),
            Event("u3", "purchase", T0, {"amount": "not a number"}),
        ]
    )
    rows = np.arange(3, dtype=np.int64)
    assert encoded_rows(engine, rows) == encode_profiles(row_records(engine, rows))
    assert encoded_rows(engine, rows[:0]) == []
