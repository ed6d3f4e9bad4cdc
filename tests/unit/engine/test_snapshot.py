"""Snapshots: a restored engine continues exactly like one that never stopped."""

from __future__ import annotations

from pathlib import Path

from audience_manager.engine import Engine, Event, ManualClock, SegmentDefinition
from audience_manager.engine.snapshot import latest_snapshot, load_snapshot, save_snapshot
from audience_manager.rules.attributes import ComputedAttribute
from audience_manager.rules.model import parse_rules

T0 = 1_767_225_600_000
HOUR = 3_600_000

RULES = {
    "plans": {"conditions": [{"field": "plan", "operator": "in", "value": ["pro", "team"]}]},
    "recent": {"conditions": [{"field": "lastSeen", "operator": "within_last", "value": "2h"}]},
    "buyers": {
        "conditions": [
            {
                "event": "purchase",
                "aggregate": "sum",
                "property": "amount",
                "operator": "gt",
                "value": 20,
                "within": "3h",
            }
        ]
    },
    "both": {
        "conditions": [
            {"segment": "plans", "operator": "in"},
            {"field": "favourite", "operator": "eq", "value": "books"},
        ]
    },
}
RULES["recent again"] = RULES["recent"]  # a clone shares the evaluation, before and after


def build(clock: ManualClock) -> Engine:
    engine = Engine(
        clock,
        attributes=[
            ComputedAttribute(
                name="favourite", event_type="purchase", aggregate="last", property="category"
            )
        ],
    )
    for name, rule in RULES.items():
        engine.upsert_segment(SegmentDefinition(name, name, parse_rules(rule)))
    return engine


def batches() -> list[list[Event]]:
    out = []
    for hour in range(6):
        batch = [
            Event(f"u{i}", "purchase", T0 + hour * HOUR, {"amount": 7 + i, "category": "books"})
            for i in range(hour, hour + 5)
        ]
        batch.append(Event(f"u{hour}", "identify", T0 + hour * HOUR, {}, {"plan": "pro"}))
        out.append(batch)
    return out


def state(engine: Engine) -> dict[str, object]:
    users = sorted(engine.ids._dense)
    return {
        "members": {s: engine.members(s) for s in RULES},
        "profiles": {u: engine.profile(u) for u in users},
    }


def test_a_restored_engine_continues_like_one_that_never_stopped(tmp_path: Path) -> None:
    straight_clock = ManualClock(T0)
    straight = build(straight_clock)
    resumed_clock = ManualClock(T0)
    resumed = build(resumed_clock)
    for index, batch in enumerate(batches()):
        for clock, engine in ((straight_clock, straight), (resumed_clock, resumed)):
            clock.now = T0 + index * HOUR
            engine.apply(batch)
        if index % 2 == 1:
            save_snapshot(tmp_path, resumed, {0: index + 1})
            path = latest_snapshot(tmp_path)
            assert path is not None
            snapshot = load_snapshot(path, resumed_clock)
            assert snapshot.positions == {0: index + 1}
            resumed = snapshot.engine
    for clock in (straight_clock, resumed_clock):
        clock.now = T0 + 12 * HOUR
    assert straight.advance() == resumed.advance()
    assert state(straight) == state(resumed)


def test_only_the_newest_snapshots_are_kept(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    engine = build(clock)
    for offset in range(5):
        save_snapshot(tmp_path, engine, {0: offset, 1: offset})
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert len(kept) == 2
    assert latest_snapshot(tmp_path) == tmp_path / kept[-1]
    assert load_snapshot(tmp_path / kept[-1], clock).positions == {0: 4, 1: 4}
