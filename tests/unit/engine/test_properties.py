"""The engine against the reference interpreter, on random rules and event streams.

Every property builds segments and events from ``strategies``, runs them through the
engine, and compares membership (and profiles) with ``reference.ReferenceModel``, which
evaluates the rules of ``docs/rules.md`` from scratch over the raw event history.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ReferenceModel, iso_to_ms, strict_equal
from strategies import (
    BASE,
    EVERY_KIND,
    HOUR,
    ISO_TIMES,
    LOOK_ALIKES,
    MINUTE,
    SHORT_WINDOWS,
    TRICKY_AMOUNTS,
    computed_attributes,
    event_streams,
    events,
    instants,
    kind_condition,
    segment_sets,
    trait_keys,
    user_pools,
)

from audience_manager.engine import (
    Engine,
    Event,
    ManualClock,
    MembershipChange,
    SegmentDefinition,
)
from audience_manager.rules.attributes import ComputedAttribute
from audience_manager.rules.model import Group, parse_rules, rule_to_json

Segments = list[tuple[str, str, Group]]
Batch = list[dict[str, Any]]

PROPERTY_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# -- running both sides -------------------------------------------------------------------


class Run:
    """An engine and the reference model fed the same definitions, events and times."""

    def __init__(self, now: int, attributes: Sequence[ComputedAttribute] = ()) -> None:
        self.clock = ManualClock(now)
        self.engine = Engine(self.clock, attributes=attributes)
        self.reference = ReferenceModel.create(attributes)
        self.segments: Segments = []
        self.changes: list[MembershipChange] = []

    @property
    def now(self) -> int:
        return self.clock.now

    def define(self, segments: Segments) -> None:
        for segment_id, name, rules in segments:
            changes = self.engine.upsert_segment(SegmentDefinition(segment_id, name, rules))
            self._record(changes)
            self.reference.add_segment(segment_id, name, rules)
            self.segments.append((segment_id, name, rules))

    def apply(self, batch: Batch, at: int | None = None) -> None:
        if at is not None:
            self.clock.now = at
        result = self.engine.apply([Event(**event) for event in batch])
        assert result.rejected == []
        self._record(result.changes)
        self.reference.apply(batch, self.now)

    def advance(self, to: int) -> None:
        self.clock.now = to
        self._record(self.engine.advance(to))

    def _record(self, changes: Iterable[MembershipChange]) -> None:
        for change in changes:
            assert change.at == self.now, f"{change} stamped at another time than {self.now}"
            self.changes.append(change)

    # -- checks --------------------------------------------------------------------------

    def check_members(self) -> None:
        """Engine members equal the reference's, with a readable account of any difference."""
        for segment_id, _, rules in self.segments:
            actual = self.engine.members(segment_id)
            expected = self.reference.members(segment_id, self.now)
            if actual != expected:
                user = sorted(actual ^ expected)[0]
                raise AssertionError(self._describe(segment_id, rules, user, actual, expected))

    def check_explain(self) -> None:
        for segment_id, _, rules in self.segments:
            expected = self.reference.members(segment_id, self.now)
            for user in sorted(self.reference.users()):
                held = self.engine.explain(user, segment_id).held
                if held != (user in expected):
                    raise AssertionError(
                        f"explain({user}, {segment_id}).held is {held}\n"
                        + self._describe(segment_id, rules, user, set(), expected)
                    )

    def check_profiles(self) -> None:
        for user in sorted(self.reference.users()):
            actual = engine_profile(self.engine, user)
            expected = self.reference.profile(user, self.now)
            assert strict_equal(actual, expected), (
                f"profile of {user} at {self.now}\nengine:    {actual}\nreference: {expected}"
            )

    def check_changes(self) -> None:
        replay_changes(self.changes, self.engine, [s for s, _, _ in self.segments])

    def _describe(
        self, segment_id: str, rules: Group, user: str, actual: set[str], expected: set[str]
    ) -> str:
        history = [
            (e.event_type, e.timestamp - BASE, e.properties, e.traits, e.applied_at - BASE)
            for e in self.reference.events
            if e.user_id == user
        ]
        explanation = self.engine.explain(user, segment_id).to_json()
        return "\n".join(
            [
                f"segment {segment_id} at now=BASE{self.now - BASE:+d}: user {user} "
                f"engine={'in' if user in actual else 'out'} "
                f"reference={'in' if user in expected else 'out'}",
                "rules: " + json.dumps(rule_to_json(rules)),
                "events (type, t-BASE, properties, traits, applied-BASE): " + repr(history),
                f"reference profile: {self.reference.profile(user, self.now)}",
                "explain: " + json.dumps(explanation, default=str),
                "other segments: "
                + repr([(s, rule_to_json(r)) for s, _, r in self.segments if s != segment_id]),
            ]
        )


def engine_profile(engine: Engine, user: str) -> dict[str, Any] | None:
    """The engine's profile with times as epoch ms and segments sorted, like the reference."""
    profile = engine.profile(user)
    if profile is None:
        return None
    return {
        **profile,
        "firstSeen": iso_to_ms(profile["firstSeen"]),
        "lastSeen": iso_to_ms(profile["lastSeen"]),
        "segments": sorted(profile["segments"]),
    }


def replay_changes(
    changes: Sequence[MembershipChange], engine: Engine, segment_ids: Iterable[str]
) -> None:
    """Enter/exit records replayed from empty give the members; each one changes something."""
    replayed: dict[str, set[str]] = {}
    for change in changes:
        members = replayed.setdefault(change.segment_id, set())
        if change.change == "enter":
            assert change.user_id not in members, f"enter of a member: {change}"
            members.add(change.user_id)
        else:
            assert change.change == "exit", change
            assert change.user_id in members, f"exit of a non-member: {change}"
            members.discard(change.user_id)
    for segment_id in segment_ids:
        assert replayed.get(segment_id, set()) == engine.members(segment_id), segment_id


@st.composite
def batch_splits(draw: st.DrawFn, stream: Batch) -> list[Batch]:
    """``stream`` cut into consecutive batches (empty ones included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


# -- a. the compiled evaluator agrees with the reference ----------------------------------


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(data=st.data())
def test_engine_agrees_with_reference(data: st.DataObject) -> None:
    attributes = data.draw(computed_attributes(), label="attributes")
    keys = data.draw(trait_keys(), label="trait keys")
    segments = data.draw(segment_sets([a.name for a in attributes], keys), label="segments")
    stream = data.draw(event_streams(keys), label="events")
    now = data.draw(instants(stream, segments, attributes), label="now")

    run = Run(now, attributes)
    run.define(segments)
    run.apply(stream)

    run.check_members()
    run.check_explain()
    run.check_profiles()


# -- b. batch boundaries do not matter ----------------------------------------------------


@settings(PROPERTY_SETTINGS, max_examples=80)
@given(data=st.data())
def test_batch_split_does_not_change_anything(data: st.DataObject) -> None:
    attributes = data.draw(computed_attributes(), label="attributes")
    keys = data.draw(trait_keys(), label="trait keys")
    segments = data.draw(segment_sets([a.name for a in attributes], keys), label="segments")
    stream = data.draw(event_streams(keys), label="events")
    batches = data.draw(batch_splits(stream), label="batches")
    now = data.draw(instants(stream, segments, attributes), label="now")

    whole, split = Run(now, attributes), Run(now, attributes)
    for run in (whole, split):
        run.define(segments)
    whole.apply(stream)
    for batch in batches:
        split.apply(batch)

    for segment_id, _, _ in segments:
        assert split.engine.members(segment_id) == whole.engine.members(segment_id), segment_id
    for user in sorted(whole.reference.users()):
        split_profile = engine_profile(split.engine, user)
        whole_profile = engine_profile(whole.engine, user)
        assert strict_equal(split_profile, whole_profile), (user, split_profile, whole_profile)
    split.check_members()
    split.check_changes()


# -- c. time passing alone ----------------------------------------------------------------


@st.composite
def timed_batches(
    draw: st.DrawFn,
    keys: tuple[str, ...],
    segments: Segments,
    attributes: Sequence[ComputedAttribute],
) -> tuple[int, list[tuple[int, Batch]], int]:
    """A start time, batches with the (non-decreasing) clock time of each, and a final time."""
    users = draw(user_pools())
    start = BASE + draw(st.integers(-HOUR, 0))
    clock = start
    batches = []
    for _ in range(draw(st.integers(1, 4))):
        clock += draw(st.sampled_from([0, 0, 1, 999, 1000, 30_000]) | st.integers(0, 20 * MINUTE))
        batches.append((clock, draw(events(users, keys, spread=HOUR, max_size=15))))
    later = st.sampled_from([1000, 5000, 30_000, MINUTE, 2 * MINUTE, HOUR, 3 * HOUR, 25 * HOUR])
    stream = [event for _, batch in batches for event in batch]
    after = (later | st.integers(0, 3 * HOUR)).map(clock.__add__)
    end = max(clock, draw(after | instants(stream, segments, attributes)))
    return start, batches, end


@settings(PROPERTY_SETTINGS, max_examples=120)
@given(data=st.data())
def test_time_passing_matches_a_fresh_engine_and_the_reference(data: st.DataObject) -> None:
    attributes = data.draw(computed_attributes(), label="attributes")
    keys = data.draw(trait_keys(), label="trait keys")
    segments = data.draw(segment_sets([a.name for a in attributes], keys), label="segments")
    start, batches, end = data.draw(
        timed_batches(keys, segments, attributes), label="start, batches, end"
    )
    stream = [event for _, batch in batches for event in batch]
    edges = instants(stream, segments, attributes).map(lambda t: min(max(t, start), end))
    checkpoint = st.integers(start, end) | edges
    checkpoints = sorted(data.draw(st.lists(checkpoint, max_size=4), label="checkpoints"))

    stepped, fresh = Run(start, attributes), Run(start, attributes)
    stepped.define(segments)
    fresh.define(segments)
    for at, batch in batches:
        # The stepped engine also looks at membership between batches.
        while checkpoints and checkpoints[0] < at:
            stepped.advance(checkpoints.pop(0))
            stepped.check_members()
        stepped.apply(batch, at)
        stepped.check_members()
        fresh.apply(batch, at)
    for checkpoint in checkpoints:
        stepped.advance(checkpoint)
        stepped.check_members()
    stepped.advance(end)
    fresh.advance(end)

    stepped.check_members()
    fresh.check_members()
    for segment_id, _, _ in segments:
        assert stepped.engine.members(segment_id) == fresh.engine.members(segment_id)
    stepped.check_profiles()
    stepped.check_changes()
    fresh.check_changes()


@settings(PROPERTY_SETTINGS, max_examples=40)
@given(data=st.data())
def test_short_windows_expire_on_time(data: st.DataObject) -> None:
    """Events in short windows, then many small steps of the clock across the bucket edges."""
    attributes = data.draw(computed_attributes(windows=SHORT_WINDOWS), label="attributes")
    keys = data.draw(trait_keys(), label="trait keys")
    segments = data.draw(
        segment_sets([a.name for a in attributes], keys, windows=SHORT_WINDOWS), label="segments"
    )
    stream = data.draw(event_streams(keys, spread=2 * MINUTE, max_size=20), label="events")
    run = Run(BASE, attributes)
    run.define(segments)
    run.apply(stream)
    run.check_members()
    steps = data.draw(
        st.lists(st.sampled_from([1, 499, 500, 1000, 4000, 30_000]), min_size=1, max_size=12),
        label="steps",
    )
    for step in steps:
        run.advance(run.now + step)
        run.check_members()
    run.check_changes()


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(data=st.data())
def test_time_operators_and_windows_flip_exactly_on_their_edges(data: st.DataObject) -> None:
    """Rules of time operators and windowed event conditions, read at instants one
    millisecond either side of each edge."""
    segments = data.draw(segment_sets(time_only=True), label="segments")
    stream = data.draw(event_streams(("signupAt",), max_size=20), label="events")
    start = BASE + data.draw(st.integers(-HOUR, HOUR), label="start - BASE")
    times = data.draw(st.lists(instants(stream, segments), min_size=4, max_size=12), label="times")
    run = Run(start)
    run.define(segments)
    run.apply(stream)
    run.check_members()
    for at in sorted(max(t, start) for t in times):
        run.advance(at)
        run.check_members()
    run.check_changes()


# -- a, focused: strict types and exact sums -----------------------------------------------


@settings(PROPERTY_SETTINGS, max_examples=400)
@given(data=st.data())
def test_single_conditions_on_values_of_every_type(data: st.DataObject) -> None:
    """Each user holds one value of some family (or none), at the top and nested; one
    condition per segment, on the trait and, through ``where``, on an event property."""
    values = data.draw(
        st.lists(st.sampled_from([*EVERY_KIND, None]), min_size=5, max_size=30), label="values"
    )
    conditions = data.draw(
        st.lists(kind_condition("v") | kind_condition("o.k"), min_size=1, max_size=6),
        label="conditions",
    )
    segments: Segments = []
    for index, condition in enumerate(conditions):
        segments.append((f"t{index}", f"T{index}", parse_rules({"conditions": [condition]})))
        if condition.get("operator") == "within_last" or (
            condition["operator"] in ("before", "after") and condition["value"] not in ISO_TIMES
        ):
            continue  # a where may not depend on the clock
        rules = {"conditions": [{"event": "view", "where": [condition]}]}
        segments.append((f"p{index}", f"P{index}", parse_rules(rules)))
    stream = [
        {
            "user_id": f"u{i}",
            "event_type": "view",
            "timestamp": BASE - i,
            "properties": {"v": value, "o": {"k": value}},
            "traits": {"v": value, "o": {"k": value}},
        }
        for i, value in enumerate(values)
    ]
    run = Run(BASE)
    run.define(segments)
    run.apply(stream)
    run.check_members()


AGGREGATES = ("count", "sum", "min", "max", "avg", "first", "last", "distinct_count")


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(data=st.data())
def test_computed_attributes_on_values_of_every_type(data: st.DataObject) -> None:
    """Every aggregate over a property holding values of every family, with many ties in
    event time; profiles and one condition on each attribute agree with the reference."""
    within = data.draw(st.none() | st.sampled_from(["5s", "1m"]), label="within")
    attributes = [
        ComputedAttribute(
            name=aggregate,
            event_type=data.draw(st.sampled_from(["view", "*"]), label="event type"),
            aggregate=aggregate,
            property=None if aggregate == "count" else "v",
            within=within,
        )
        for aggregate in AGGREGATES
    ]
    event = st.fixed_dictionaries(
        {
            "user_id": st.sampled_from(["u0", "u1", "u2", "u3"]),
            "event_type": st.sampled_from(["view", "view", "other"]),
            "timestamp": st.sampled_from([0, 0, -1, 1, -1000, -30_000]).map(BASE.__add__),
            "properties": st.fixed_dictionaries(
                {},
                optional={"v": st.sampled_from([*EVERY_KIND, None]) | st.sampled_from(LOOK_ALIKES)},
            ),
            "traits": st.none(),
        }
    )
    stream = data.draw(st.lists(event, min_size=1, max_size=16), label="events")
    conditions = [data.draw(kind_condition(name), label=name) for name in AGGREGATES]
    segments: Segments = [
        (f"c{i}", f"C{i}", parse_rules({"conditions": [condition]}))
        for i, condition in enumerate(conditions)
    ]
    now = BASE + data.draw(st.sampled_from([0, 1, 5_999, 6_000, 60_999, 61_000]), label="now")
    run = Run(now, attributes)
    run.define(segments)
    run.apply(stream)
    run.check_profiles()
    run.check_members()


@pytest.mark.parametrize("value", [{"sku": None}, [None], {"a": [1, None]}])
def test_a_value_holding_nulls_equals_itself(value: Any) -> None:
    """Lists and objects compare item by item, key by key; a null inside is a value there
    (not a missing attribute), so an identical document is equal, as ``distinct_count``
    already counts it."""
    rules = [
        {"field": "x", "operator": "eq", "value": value},
        {"field": "x", "operator": "in", "value": [value]},
        {"event": "view", "where": [{"field": "x", "operator": "eq", "value": value}]},
    ]
    run = Run(BASE)
    run.define([(f"s{i}", f"S{i}", parse_rules({"conditions": [r]})) for i, r in enumerate(rules)])
    run.apply(
        [
            {
                "user_id": "u0",
                "event_type": "view",
                "timestamp": BASE,
                "properties": {"x": value},
                "traits": {"x": value},
            }
        ]
    )
    assert run.reference.members("s0", BASE) == {"u0"}
    run.check_members()


@st.composite
def purchases_and_targets(draw: st.DrawFn) -> tuple[list[list[Any]], list[float]]:
    """Amounts per user, and sums and averages of some of them (exact to six decimals)."""
    amounts = draw(
        st.lists(
            st.lists(st.sampled_from(TRICKY_AMOUNTS), min_size=1, max_size=4),
            min_size=3,
            max_size=12,
        )
    )
    targets = []
    for _ in range(draw(st.integers(1, 4))):
        chosen = draw(st.sampled_from(amounts))
        micros = sum(round(a * 1_000_000) for a in chosen)
        targets += [micros / 1_000_000, micros / (len(chosen) * 1_000_000)]
    return amounts, targets


@settings(PROPERTY_SETTINGS, max_examples=150)
@given(data=st.data())
def test_sums_and_averages_are_exact(data: st.DataObject) -> None:
    amounts, targets = data.draw(purchases_and_targets(), label="amounts, targets")
    operators = data.draw(
        st.lists(st.sampled_from(["gte", "lte", "gt", "lt", "neq"]), min_size=1, max_size=1),
        label="operator",
    )
    documents: list[dict[str, Any]] = []
    for target in targets:
        for operator in ["eq", *operators]:
            documents.append(
                {"conditions": [{"field": "totalSpent", "operator": operator, "value": target}]}
            )
            documents += [
                {
                    "conditions": [
                        {
                            "event": "purchase",
                            "aggregate": aggregate,
                            "property": "amount",
                            "operator": operator,
                            "value": target,
                        }
                    ]
                }
                for aggregate in ("sum", "avg", "min", "max")
            ]
    segments: Segments = [
        (f"x{i}", f"X{i}", parse_rules(document)) for i, document in enumerate(documents)
    ]
    stream = [
        {
            "user_id": f"u{user}",
            "event_type": "purchase",
            "timestamp": BASE - position,
            "properties": {"amount": amount},
            "traits": None,
        }
        for user, spent in enumerate(amounts)
        for position, amount in enumerate(spent)
    ]
    run = Run(BASE)
    run.define(segments)
    run.apply(stream)
    run.check_members()
    run.check_profiles()


# -- d. the change records add up to the membership ---------------------------------------


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(data=st.data())
def test_changes_replay_to_the_members(data: st.DataObject) -> None:
    attributes = data.draw(computed_attributes(), label="attributes")
    keys = data.draw(trait_keys(), label="trait keys")
    first = data.draw(segment_sets([a.name for a in attributes], keys, max_size=3), label="first")
    later = data.draw(
        segment_sets(
            [a.name for a in attributes],
            keys,
            min_size=0,
            max_size=2,
            prefix="late",
            earlier=[s for s, _, _ in first],
            with_events=False,
        ),
        label="later",
    )
    start, batches, end = data.draw(
        timed_batches(keys, first + later, attributes), label="start, batches, end"
    )

    run = Run(start, attributes)
    run.define(first)
    for index, (at, batch) in enumerate(batches):
        run.apply(batch, at)
        if index == 0:
            run.define(later)
        run.check_changes()
    run.advance(end)
    run.check_changes()
    run.check_members()


# -- e. segments defined after the events -------------------------------------------------


@settings(PROPERTY_SETTINGS, max_examples=80)
@given(data=st.data())
def test_backfill_equals_defining_first(data: st.DataObject) -> None:
    attributes = data.draw(computed_attributes(), label="attributes")
    names = [a.name for a in attributes]
    keys = data.draw(trait_keys(), label="trait keys")
    early = data.draw(segment_sets(names, keys, max_size=3), label="early")
    late = data.draw(
        segment_sets(
            names,
            keys,
            max_size=3,
            prefix="late",
            earlier=[s for s, _, _ in early],
            with_events=False,
        ),
        label="late",
    )
    stream = data.draw(event_streams(keys), label="events")
    batches = data.draw(batch_splits(stream), label="batches")
    now = data.draw(instants(stream, early + late, attributes), label="now")

    backfilled, upfront = Run(now, attributes), Run(now, attributes)
    backfilled.define(early)
    upfront.define(early + late)
    for batch in batches:
        backfilled.apply(batch)
        upfront.apply(batch)
    backfilled.define(late)

    for segment_id, _, _ in early + late:
        assert backfilled.engine.members(segment_id) == upfront.engine.members(segment_id)
    backfilled.check_members()
    backfilled.check_changes()
