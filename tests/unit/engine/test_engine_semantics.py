"""Rule semantics through the engine: events in, profiles and membership changes out.

Every expectation comes from ``docs/rules.md``; membership at any instant must equal the
rules evaluated from scratch at that instant.
"""

from datetime import UTC, datetime
from typing import Any

import pytest

from audience_manager.engine import (
    Engine,
    Event,
    ManualClock,
    MembershipChange,
    SegmentDefinition,
)
from audience_manager.engine.aggregates import bucket_width
from audience_manager.rules.attributes import ComputedAttribute
from audience_manager.rules.errors import RuleValidationError
from audience_manager.rules.model import parse_rules

T0 = 1_700_000_000_000
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def engine(clock: ManualClock) -> Engine:
    return Engine(clock)


def define(
    engine: Engine, segment_id: str, *conditions: Any, match: str = "all", name: str | None = None
) -> list[MembershipChange]:
    rules = parse_rules({"match": match, "conditions": list(conditions)})
    return engine.upsert_segment(SegmentDefinition(segment_id, name or segment_id, rules))


def event(
    user_id: str = "u1",
    event_type: str = "track",
    at: int = T0,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
) -> Event:
    return Event(user_id, event_type, at, properties or {}, traits)


def purchase(user_id: str = "u1", amount: Any = 10, at: int = T0, **properties: Any) -> Event:
    return event(user_id, "purchase", at, {"amount": amount, **properties})


def identify(user_id: str = "u1", at: int = T0, **traits: Any) -> Event:
    return event(user_id, "identify", at, traits=traits)


def summary(changes: list[MembershipChange]) -> set[tuple[str, str, str]]:
    return {(c.segment_id, c.user_id, c.change) for c in changes}


def attributes(engine: Engine, user_id: str = "u1") -> dict[str, Any]:
    profile = engine.profile(user_id)
    assert profile is not None
    result: dict[str, Any] = profile["attributes"]
    return result


def traits(engine: Engine, user_id: str = "u1") -> dict[str, Any]:
    profile = engine.profile(user_id)
    assert profile is not None
    result: dict[str, Any] = profile["traits"]
    return result


def pick(mapping: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``mapping`` under the keys of ``expected``, to compare with it."""
    return {key: mapping.get(key, "<absent>") for key in expected}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def window_end(t: int, window: int) -> int:
    """The first instant at which an event at ``t`` no longer counts in ``window``."""
    width = bucket_width(window)
    return (t // width + 1) * width + window


# -- the seed example --------------------------------------------------------------------


def test_seed_purchase_of_1500_enters_high_value_users(engine: Engine, clock: ManualClock) -> None:
    rules = parse_rules({"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]})
    assert engine.upsert_segment(SegmentDefinition("hv", "High Value Users", rules)) == []

    result = engine.apply(
        [Event("user123", "purchase", clock.now, {"amount": 1500, "category": "electronics"})]
    )

    assert result.changes == [MembershipChange("hv", "user123", "enter", clock.now)]
    assert result.profiles == ["user123"]
    assert result.rejected == []
    assert engine.members("hv") == {"user123"}
    profile = engine.profile("user123")
    assert profile is not None
    assert profile["attributes"]["totalSpent"] == 1500
    assert profile["attributes"]["purchaseCount"] == 1
    assert profile["attributes"]["eventCount"] == 1
    assert profile["segments"] == ["hv"]


def test_total_spent_must_exceed_the_threshold(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 1000})

    assert engine.apply([purchase(amount=1000)]).changes == []
    assert summary(engine.apply([purchase(amount=0.01)]).changes) == {("hv", "u1", "enter")}


# -- traits ------------------------------------------------------------------------------


def test_a_late_older_trait_write_does_not_overwrite(engine: Engine) -> None:
    define(engine, "pro", {"field": "plan", "operator": "eq", "value": "pro"})
    engine.apply([identify(at=T0, plan="pro")])

    result = engine.apply([identify(at=T0 - SECOND, plan="free")])

    assert result.changes == []
    assert traits(engine)["plan"] == "pro"
    assert engine.members("pro") == {"u1"}


def test_a_newer_trait_write_overwrites(engine: Engine) -> None:
    define(engine, "pro", {"field": "plan", "operator": "eq", "value": "pro"})
    engine.apply([identify(at=T0, plan="pro")])

    result = engine.apply([identify(at=T0 + 1, plan="free")])

    assert summary(result.changes) == {("pro", "u1", "exit")}
    assert traits(engine)["plan"] == "free"


def test_equal_event_times_the_later_arrival_wins(engine: Engine) -> None:
    define(engine, "pro", {"field": "plan", "operator": "eq", "value": "pro"})

    engine.apply([identify(at=T0, plan="free"), identify(at=T0, plan="pro")])
    assert traits(engine)["plan"] == "pro"
    assert engine.members("pro") == {"u1"}

    engine.apply([identify(at=T0, plan="team")])
    assert traits(engine)["plan"] == "team"
    assert engine.members("pro") == set()


@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        pytest.param(["pro", None], {}, id="null arrives last"),
        pytest.param([None, "pro"], {"plan": "pro"}, id="value arrives last"),
    ],
)
def test_equal_event_times_in_one_batch_with_null(
    engine: Engine, writes: list[Any], expected: dict[str, Any]
) -> None:
    engine.apply([identify(at=T0, plan=value) for value in writes])

    assert traits(engine) == expected


def test_events_of_one_batch_are_ordered_by_event_time_not_position(engine: Engine) -> None:
    engine.apply([identify(at=T0 + 5, plan="newest"), identify(at=T0, plan="older")])

    assert traits(engine)["plan"] == "newest"


def test_null_removes_a_trait(engine: Engine) -> None:
    define(engine, "no-plan", {"field": "plan", "operator": "not_exists"})
    define(engine, "pro", {"field": "plan", "operator": "eq", "value": "pro"})
    engine.apply([identify(at=T0, plan="pro", name="Ada")])
    assert engine.members("no-plan") == set()

    result = engine.apply([identify(at=T0 + 1, plan=None)])

    assert summary(result.changes) == {("no-plan", "u1", "enter"), ("pro", "u1", "exit")}
    assert traits(engine) == {"name": "Ada"}


def test_an_older_write_does_not_bring_back_a_removed_trait(engine: Engine) -> None:
    define(engine, "no-plan", {"field": "plan", "operator": "not_exists"})
    engine.apply([identify(at=T0, plan=None)])
    engine.apply([identify(at=T0 - HOUR, plan="pro")])

    assert "plan" not in traits(engine)
    assert engine.members("no-plan") == {"u1"}


def test_traits_merge_shallowly_by_top_level_key(engine: Engine) -> None:
    engine.apply([identify(at=T0, name="Ada", address={"city": "Paris", "zip": "75001"})])
    engine.apply([identify(at=T0 + 1, address={"city": "Lyon"})])

    assert traits(engine) == {"name": "Ada", "address": {"city": "Lyon"}}


def test_built_in_attributes_take_precedence_over_traits(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 1000})

    engine.apply([identify(totalSpent=5000)])

    assert engine.members("hv") == set()


def test_negated_equality_holds_for_missing_traits(engine: Engine) -> None:
    engine.apply([identify("no-plan"), identify("free", plan="free"), identify("number", plan=3)])

    define(engine, "neq", {"field": "plan", "operator": "neq", "value": "pro"})
    define(engine, "not-eq", {"not": {"field": "plan", "operator": "eq", "value": "pro"}})

    assert engine.members("neq") == {"free"}
    assert engine.members("not-eq") == {"no-plan", "free", "number"}


def test_integers_beyond_float_precision_stay_exact(engine: Engine) -> None:
    define(engine, "eq", {"field": "n", "operator": "eq", "value": 2**53 + 1})
    define(engine, "gt", {"field": "n", "operator": "gt", "value": 2**53})
    define(engine, "in", {"field": "n", "operator": "in", "value": [2**53 + 1]})

    engine.apply([identify("small", n=2**53), identify("big", n=2**53 + 1)])

    assert engine.segments_of("small") == []
    assert engine.segments_of("big") == ["eq", "gt", "in"]
    assert traits(engine, "big") == {"n": 2**53 + 1}


# -- dotted paths into nested traits -----------------------------------------------------


def test_dotted_path_reads_into_nested_trait_objects(engine: Engine) -> None:
    define(engine, "paris", {"field": "address.city", "operator": "eq", "value": "Paris"})

    entered = engine.apply([identify(at=T0, address={"city": "Paris"})])
    left = engine.apply([identify(at=T0 + 1, address={"city": "Lyon"})])

    assert summary(entered.changes) == {("paris", "u1", "enter")}
    assert summary(left.changes) == {("paris", "u1", "exit")}


def test_segment_defined_after_the_traits_sees_nested_values(engine: Engine) -> None:
    engine.apply(
        [
            identify("u1", address={"city": "Paris", "geo": {"country": "FR"}}),
            identify("u2", address={"city": "Lyon", "geo": {"country": "FR"}}),
            identify("u3", address={"city": "Paris"}),
        ]
    )

    paris = define(engine, "paris", {"field": "address.city", "operator": "eq", "value": "Paris"})
    france = define(engine, "fr", {"field": "address.geo.country", "operator": "eq", "value": "FR"})

    assert summary(paris) == {("paris", "u1", "enter"), ("paris", "u3", "enter")}
    assert summary(france) == {("fr", "u1", "enter"), ("fr", "u2", "enter")}


def test_nested_values_written_after_the_path_was_first_read(engine: Engine) -> None:
    engine.apply([identify("u1", address={"city": "Lyon"})])
    define(engine, "paris", {"field": "address.city", "operator": "eq", "value": "Paris"})

    result = engine.apply([identify("u2", address={"city": "Paris"})])

    assert summary(result.changes) == {("paris", "u2", "enter")}


@pytest.mark.parametrize(
    "address",
    ["Paris", ["Paris"], {"city": None}, {"town": "Paris"}, 12],
    ids=["string", "list", "null", "other key", "number"],
)
def test_a_path_through_something_not_an_object_is_missing(engine: Engine, address: Any) -> None:
    define(engine, "has-city", {"field": "address.city", "operator": "exists"})
    define(engine, "no-city", {"field": "address.city", "operator": "not_exists"})

    engine.apply([identify(address=address)])

    assert engine.members("has-city") == set()
    assert engine.members("no-city") == {"u1"}


def test_nested_value_left_when_the_root_is_removed(engine: Engine) -> None:
    define(engine, "paris", {"field": "address.city", "operator": "eq", "value": "Paris"})
    engine.apply([identify(at=T0, address={"city": "Paris"})])

    result = engine.apply([identify(at=T0 + 1, address=None)])

    assert summary(result.changes) == {("paris", "u1", "exit")}


def test_nested_value_left_when_the_root_becomes_a_string(engine: Engine) -> None:
    define(engine, "paris", {"field": "address.city", "operator": "eq", "value": "Paris"})
    engine.apply([identify(at=T0, address={"city": "Paris"})])

    result = engine.apply([identify(at=T0 + 1, address="Paris")])

    assert summary(result.changes) == {("paris", "u1", "exit")}


# -- built-in attributes -----------------------------------------------------------------


def test_built_in_totals_and_counts(engine: Engine) -> None:
    engine.apply(
        [
            purchase(amount=10),
            purchase(amount=2.5),
            purchase(amount="100"),  # not a number: skipped by the sum, still a purchase
            purchase(amount=True),
            event(event_type="purchase"),  # no amount
            identify(plan="pro"),
            event(event_type="page_view", properties={"amount": 1000}),
        ]
    )

    assert attributes(engine)["totalSpent"] == 12.5
    assert attributes(engine)["purchaseCount"] == 5
    assert attributes(engine)["eventCount"] == 7


def test_built_ins_are_zero_without_such_events(engine: Engine) -> None:
    define(
        engine,
        "nothing-bought",
        {"field": "totalSpent", "operator": "eq", "value": 0},
        {"field": "purchaseCount", "operator": "eq", "value": 0},
        {"field": "eventCount", "operator": "eq", "value": 1},
    )

    engine.apply([identify()])

    assert engine.members("nothing-bought") == {"u1"}


def test_first_and_last_seen_are_the_earliest_and_latest_event_times(engine: Engine) -> None:
    define(engine, "old", {"field": "firstSeen", "operator": "before", "value": "2d"})
    define(engine, "recent", {"field": "lastSeen", "operator": "within_last", "value": "1h"})
    engine.apply([event(at=T0 - 10 * MINUTE)])
    assert engine.members("recent") == {"u1"}
    assert engine.members("old") == set()

    result = engine.apply([event(at=T0 - 3 * DAY)])  # late: moves firstSeen back only

    assert summary(result.changes) == {("old", "u1", "enter")}
    assert engine.members("recent") == {"u1"}
    profile = engine.profile("u1")
    assert profile is not None
    assert datetime.fromisoformat(profile["firstSeen"]) == datetime.fromtimestamp(
        (T0 - 3 * DAY) / 1000, tz=UTC
    )
    assert datetime.fromisoformat(profile["lastSeen"]) == datetime.fromtimestamp(
        (T0 - 10 * MINUTE) / 1000, tz=UTC
    )


def test_first_seen_against_an_iso_instant(engine: Engine) -> None:
    define(engine, "early", {"field": "firstSeen", "operator": "before", "value": iso(T0)})
    define(engine, "late", {"field": "firstSeen", "operator": "after", "value": iso(T0)})

    engine.apply([event("a", at=T0 - 1), event("b", at=T0), event("c", at=T0 + 1)])

    assert engine.members("early") == {"a"}
    assert engine.members("late") == {"c"}


@pytest.mark.parametrize("operator", ["eq", "gt", "between", "in", "contains", "matches"])
def test_time_attributes_refuse_other_operators(engine: Engine, operator: str) -> None:
    value: Any = {"between": [0, 1], "in": [0], "contains": "2", "matches": "2"}.get(operator, 0)

    with pytest.raises(RuleValidationError):
        define(engine, "bad", {"field": "lastSeen", "operator": operator, "value": value})


# -- event conditions --------------------------------------------------------------------


def test_event_condition_alone_means_at_least_one(engine: Engine) -> None:
    define(engine, "buyers", {"event": "purchase"})

    engine.apply([event("browser", "page_view"), purchase("buyer")])

    assert engine.members("buyers") == {"buyer"}


def test_count_with_where_on_properties(engine: Engine) -> None:
    define(
        engine,
        "readers",
        {
            "event": "purchase",
            "where": [
                {"field": "category", "operator": "eq", "value": "books"},
                {"field": "item.sku", "operator": "starts_with", "value": "B-"},
            ],
            "count": {"operator": "gte", "value": 2},
        },
    )
    book = {"category": "books", "item": {"sku": "B-1"}}

    engine.apply(
        [
            purchase(**book),
            purchase(category="books", item={"sku": "X-1"}),
            purchase(category="games", item={"sku": "B-2"}),
            purchase(category="books"),
        ]
    )
    assert engine.members("readers") == set()

    result = engine.apply([purchase(**book)])

    assert summary(result.changes) == {("readers", "u1", "enter")}


def test_count_between(engine: Engine) -> None:
    define(engine, "some", {"event": "login", "count": {"operator": "between", "value": [2, 3]}})
    history = []
    for _ in range(4):
        history.append(summary(engine.apply([event(event_type="login")]).changes))

    assert history == [set(), {("some", "u1", "enter")}, set(), {("some", "u1", "exit")}]


def aggregate(name: str, operator: str, value: Any) -> dict[str, Any]:
    return {
        "event": "purchase",
        "aggregate": name,
        "property": "amount",
        "operator": operator,
        "value": value,
    }


def test_aggregates_use_numeric_values_only(engine: Engine) -> None:
    define(engine, "sum", aggregate("sum", "eq", 35.5))
    define(engine, "min", aggregate("min", "eq", 5))
    define(engine, "max", aggregate("max", "eq", 20.5))
    define(engine, "avg", aggregate("avg", "between", [35.5 / 3, 35.5 / 3]))

    engine.apply(
        [
            purchase(amount=10),
            purchase(amount=20.5),
            purchase(amount="30"),
            purchase(amount=True),
            purchase(amount=None),
            purchase(amount=[40]),
            event(event_type="purchase"),
            purchase(amount=5),
        ]
    )

    assert engine.segments_of("u1") == ["sum", "min", "max", "avg"]


def test_aggregates_over_no_events(engine: Engine) -> None:
    engine.apply([identify()])

    for name in ("min", "max", "avg"):
        define(engine, name, aggregate(name, "gte", -(10**9)))
        define(engine, "not-" + name, {"not": aggregate(name, "gte", -(10**9))})
    define(engine, "sum", aggregate("sum", "eq", 0))
    define(engine, "count", {"event": "purchase", "count": {"operator": "eq", "value": 0}})

    assert set(engine.segments_of("u1")) == {"not-min", "not-max", "not-avg", "sum", "count"}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"operator": "eq", "value": 2**53 + 1}, {"exact"}),
        ({"operator": "gt", "value": 2**53}, {"exact"}),
        ({"operator": "in", "value": [2**53]}, {"rounded"}),
    ],
    ids=["eq", "gt", "in"],
)
def test_where_compares_integers_beyond_float_precision_exactly(
    engine: Engine, condition: dict[str, Any], expected: set[str]
) -> None:
    define(engine, "s", {"event": "order", "where": [{"field": "n", **condition}]})

    engine.apply([event("exact", "order", properties={"n": 2**53 + 1})])
    engine.apply([event("rounded", "order", properties={"n": 2**53})])

    assert engine.members("s") == expected


def test_aggregate_between(engine: Engine) -> None:
    define(engine, "mid", aggregate("max", "between", [10, 20]))

    assert summary(engine.apply([purchase(amount=10)]).changes) == {("mid", "u1", "enter")}
    assert engine.apply([purchase(amount=20)]).changes == []
    assert summary(engine.apply([purchase(amount=20.000001)]).changes) == {("mid", "u1", "exit")}


# -- exact sums --------------------------------------------------------------------------


@pytest.mark.parametrize("amounts", [[0.1, 0.2], [0.2, 0.1]], ids=["0.1 then 0.2", "0.2 then 0.1"])
def test_sums_are_exact_to_millionths(engine: Engine, amounts: list[float]) -> None:
    define(engine, "over", {"field": "totalSpent", "operator": "gt", "value": 0.3})
    define(engine, "exact", {"field": "totalSpent", "operator": "between", "value": [0.3, 0.3]})
    define(engine, "eq", aggregate("sum", "eq", 0.3))
    define(engine, "avg", aggregate("avg", "eq", 0.15))

    engine.apply([purchase(amount=a) for a in amounts])

    assert set(engine.segments_of("u1")) == {"exact", "eq", "avg"}
    assert attributes(engine)["totalSpent"] == 0.3


def test_money_adds_up_over_many_events(engine: Engine) -> None:
    define(engine, "exact", {"field": "totalSpent", "operator": "eq", "value": 100.0})

    engine.apply([purchase(amount=0.1) for _ in range(1000)])

    assert engine.members("exact") == {"u1"}


def test_values_are_rounded_to_millionths_half_to_even_before_adding(engine: Engine) -> None:
    define(engine, "one", {"field": "totalSpent", "operator": "eq", "value": 1})
    # 333333.6 → 333334, 333333.3 → 333333: exactly one million millionths
    engine.apply(
        [purchase(amount=0.3333336), purchase(amount=0.3333333), purchase(amount=0.3333333)]
    )
    assert attributes(engine)["totalSpent"] == 1
    assert engine.members("one") == {"u1"}

    # 2.5 → 2, 3.5 → 4, 0.5 → 0, 1.5 → 2 millionths
    engine.apply([purchase("u2", amount=a) for a in (0.0000025, 0.0000035, 0.0000005, 0.0000015)])
    assert attributes(engine, "u2")["totalSpent"] == 0.000008


# -- windows -----------------------------------------------------------------------------


def test_event_counts_for_its_window_and_leaves_within_one_bucket(engine: Engine) -> None:
    define(engine, "active", {"event": "login", "within": "1h"})
    t = T0 + 12_345
    engine.advance(t)
    assert summary(engine.apply([event(event_type="login", at=t)]).changes) == {
        ("active", "u1", "enter")
    }
    end = window_end(t, HOUR)
    assert t + HOUR < end <= t + HOUR + bucket_width(HOUR)

    assert engine.advance(t + HOUR) == []
    assert engine.advance(end - 1) == []
    assert engine.members("active") == {"u1"}
    assert engine.advance(end) == [MembershipChange("active", "u1", "exit", end)]


def test_window_counts_drop_as_events_age(engine: Engine) -> None:
    define(
        engine,
        "busy",
        {"event": "login", "within": "1d", "count": {"operator": "gte", "value": 2}},
    )
    first, second = T0, T0 + 6 * HOUR
    engine.apply([event(event_type="login", at=first)])
    engine.advance(second)
    assert summary(engine.apply([event(event_type="login", at=second)]).changes) == {
        ("busy", "u1", "enter")
    }

    assert summary(engine.advance(window_end(first, DAY))) == {("busy", "u1", "exit")}
    assert engine.advance(window_end(second, DAY)) == []


def test_an_out_of_order_event_inside_the_window_counts(engine: Engine) -> None:
    define(
        engine,
        "busy",
        {"event": "login", "within": "1h", "count": {"operator": "gte", "value": 2}},
    )
    engine.apply([event(event_type="login", at=T0)])

    result = engine.apply([event(event_type="login", at=T0 - 30 * MINUTE)])

    assert summary(result.changes) == {("busy", "u1", "enter")}
    assert summary(engine.advance(window_end(T0 - 30 * MINUTE, HOUR))) == {("busy", "u1", "exit")}


def test_an_event_arriving_already_outside_the_window_is_not_counted(engine: Engine) -> None:
    define(engine, "active", {"event": "login", "within": "1h"})

    result = engine.apply([event(event_type="login", at=T0 - 2 * HOUR)])

    assert result.changes == []
    assert engine.members("active") == set()


def test_window_edge_is_the_end_of_the_events_bucket(engine: Engine) -> None:
    define(engine, "active", {"event": "login", "within": "1h"})
    width = bucket_width(HOUR)
    bucket_start = (T0 // width + 1) * width
    bucket_end = bucket_start + width + HOUR
    engine.advance(bucket_end - 1)

    # Older than the window, but its bucket has not left it yet.
    inside = engine.apply([event("inside", "login", at=bucket_start)])
    assert summary(inside.changes) == {("active", "inside", "enter")}

    assert summary(engine.advance(bucket_end)) == {("active", "inside", "exit")}
    outside = engine.apply([event("outside", "login", at=bucket_start + width - 1)])
    assert outside.changes == []
    assert engine.members("active") == set()


def test_leaving_a_window_enters_negated_and_referencing_segments(engine: Engine) -> None:
    define(engine, "active", {"event": "login", "within": "1h"})
    define(engine, "cold", {"not": {"event": "login", "within": "1h"}})
    define(engine, "lapsed", {"segment": "active", "operator": "not_in"}, {"event": "login"})
    engine.apply([event(event_type="login", at=T0)])
    assert engine.segments_of("u1") == ["active"]

    assert summary(engine.advance(window_end(T0, HOUR))) == {
        ("active", "u1", "exit"),
        ("cold", "u1", "enter"),
        ("lapsed", "u1", "enter"),
    }


def test_windowed_sum_subtracts_what_left_the_window(engine: Engine) -> None:
    condition = {**aggregate("sum", "gte", 100), "within": "1h"}
    define(engine, "spender", condition)
    engine.apply([purchase(amount=60, at=T0 - 40 * MINUTE), purchase(amount=40.5, at=T0)])
    assert engine.members("spender") == {"u1"}

    assert summary(engine.advance(window_end(T0 - 40 * MINUTE, HOUR))) == {
        ("spender", "u1", "exit")
    }
    assert summary(engine.apply([purchase(amount=59.5)]).changes) == {("spender", "u1", "enter")}


# -- time passing: within_last, before, after --------------------------------------------


def test_within_last_exits_by_time_passing(engine: Engine) -> None:
    define(engine, "recent", {"field": "lastSeen", "operator": "within_last", "value": "1h"})
    engine.apply([event(at=T0)])

    assert engine.advance(T0 + HOUR) == []
    assert engine.members("recent") == {"u1"}
    changes = engine.advance(T0 + HOUR + 1)

    assert changes == [MembershipChange("recent", "u1", "exit", T0 + HOUR + 1)]
    assert changes[0].change == "exit"
    assert engine.members("recent") == set()


def test_within_last_exit_in_one_long_jump(engine: Engine) -> None:
    define(engine, "recent", {"field": "lastSeen", "operator": "within_last", "value": "1h"})
    engine.apply([event("a", at=T0), event("b", at=T0 - 30 * MINUTE)])

    assert summary(engine.advance(T0 + 5 * DAY)) == {
        ("recent", "a", "exit"),
        ("recent", "b", "exit"),
    }


def test_time_exits_propagate_through_references(engine: Engine) -> None:
    define(engine, "recent", {"field": "lastSeen", "operator": "within_last", "value": "1h"})
    define(
        engine,
        "recent-pro",
        {"segment": "recent"},
        {"field": "plan", "operator": "eq", "value": "pro"},
    )
    define(
        engine,
        "lapsed-pro",
        {"segment": "recent", "operator": "not_in"},
        {"field": "plan", "operator": "eq", "value": "pro"},
    )
    engine.apply([identify(at=T0, plan="pro")])
    assert engine.segments_of("u1") == ["recent", "recent-pro"]

    assert summary(engine.advance(T0 + HOUR + 1)) == {
        ("recent", "u1", "exit"),
        ("recent-pro", "u1", "exit"),
        ("lapsed-pro", "u1", "enter"),
    }


def test_apply_first_reports_what_time_changed(engine: Engine, clock: ManualClock) -> None:
    define(engine, "recent", {"field": "lastSeen", "operator": "within_last", "value": "1h"})
    engine.apply([event("a", at=T0)])
    clock.advance(2 * HOUR)

    result = engine.apply([event("b", at=clock.now)])

    assert result.changes == [
        MembershipChange("recent", "a", "exit", clock.now),
        MembershipChange("recent", "b", "enter", clock.now),
    ]


def test_each_segment_keeps_its_own_deadline(engine: Engine) -> None:
    define(engine, "a-hour", {"field": "lastSeen", "operator": "within_last", "value": "1h"})
    define(engine, "b-day", {"field": "lastSeen", "operator": "within_last", "value": "1d"})
    define(engine, "c-dormant", {"field": "lastSeen", "operator": "before", "value": "2h"})
    engine.apply([event(at=T0)])

    assert summary(engine.advance(T0 + HOUR + 1)) == {("a-hour", "u1", "exit")}
    assert summary(engine.advance(T0 + 2 * HOUR + 1)) == {("c-dormant", "u1", "enter")}
    assert summary(engine.advance(T0 + DAY + 1)) == {("b-day", "u1", "exit")}


def test_a_segment_defined_later_still_exits_by_time(engine: Engine) -> None:
    engine.apply([event(at=T0)])
    engine.advance(T0 + 30 * MINUTE)

    entered = define(
        engine, "recent", {"field": "lastSeen", "operator": "within_last", "value": "1h"}
    )

    assert summary(entered) == {("recent", "u1", "enter")}
    assert engine.advance(T0 + HOUR + 1) == [
        MembershipChange("recent", "u1", "exit", T0 + HOUR + 1)
    ]


def test_a_new_event_keeps_a_user_within_last(engine: Engine) -> None:
    define(engine, "recent", {"field": "lastSeen", "operator": "within_last", "value": "1h"})
    engine.apply([event(at=T0)])
    engine.advance(T0 + 50 * MINUTE)
    engine.apply([event(at=T0 + 50 * MINUTE)])

    assert engine.advance(T0 + HOUR + 1) == []
    assert engine.advance(T0 + 50 * MINUTE + HOUR + 1) == [
        MembershipChange("recent", "u1", "exit", T0 + 50 * MINUTE + HOUR + 1)
    ]


def test_a_future_event_enters_within_last_when_its_time_comes(engine: Engine) -> None:
    define(engine, "recent", {"field": "lastSeen", "operator": "within_last", "value": "1d"})
    assert engine.apply([event(at=T0 + HOUR)]).changes == []

    assert engine.advance(T0 + HOUR - 1) == []
    assert engine.advance(T0 + HOUR) == [MembershipChange("recent", "u1", "enter", T0 + HOUR)]


def test_before_a_duration_enters_by_time_passing(engine: Engine) -> None:
    define(engine, "dormant", {"field": "lastSeen", "operator": "before", "value": "1h"})
    engine.apply([event(at=T0)])

    assert engine.advance(T0 + HOUR) == []
    assert engine.advance(T0 + HOUR + 1) == [
        MembershipChange("dormant", "u1", "enter", T0 + HOUR + 1)
    ]


def test_after_a_duration_exits_by_time_passing(engine: Engine) -> None:
    define(engine, "fresh", {"field": "lastSeen", "operator": "after", "value": "1h"})
    engine.apply([event(at=T0)])
    assert engine.members("fresh") == {"u1"}

    assert engine.advance(T0 + HOUR - 1) == []
    assert engine.advance(T0 + HOUR) == [MembershipChange("fresh", "u1", "exit", T0 + HOUR)]


def test_trait_instants_follow_time_too(engine: Engine) -> None:
    define(engine, "trial-over", {"field": "trialEndsAt", "operator": "before", "value": "1s"})
    engine.apply([identify(trialEndsAt=iso(T0 + DAY))])
    assert engine.members("trial-over") == set()

    assert engine.advance(T0 + DAY + SECOND) == []
    assert summary(engine.advance(T0 + DAY + SECOND + 1)) == {("trial-over", "u1", "enter")}


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "at", "operator": "within_last", "value": "1h"},
        {"field": "at", "operator": "before", "value": "1h"},
        {"field": "at", "operator": "after", "value": "1d"},
    ],
    ids=["within_last", "before a duration", "after a duration"],
)
def test_a_where_cannot_depend_on_the_clock(engine: Engine, condition: dict[str, Any]) -> None:
    with pytest.raises(RuleValidationError):
        define(engine, "visited", {"event": "visit", "where": [condition]})


def test_a_where_against_an_iso_instant_is_decided_on_arrival(engine: Engine) -> None:
    define(
        engine,
        "recent-visit",
        {"event": "visit", "where": [{"field": "at", "operator": "after", "value": iso(T0)}]},
    )

    engine.apply(
        [
            event("before", "visit", properties={"at": iso(T0 - 1)}),
            event("after", "visit", properties={"at": iso(T0 + 1)}),
            event("number", "visit", properties={"at": T0 + 1}),
        ]
    )

    assert engine.members("recent-visit") == {"after"}


# -- segment references ------------------------------------------------------------------


def test_in_and_not_in_another_segment(engine: Engine) -> None:
    define(engine, "buyers", {"field": "purchaseCount", "operator": "gte", "value": 1})
    define(
        engine,
        "browsers",
        {"field": "eventCount", "operator": "gte", "value": 1},
        {"segment": "buyers", "operator": "not_in"},
    )
    define(engine, "also-buyers", {"segment": "buyers", "operator": "in"})

    assert summary(engine.apply([event(event_type="page_view")]).changes) == {
        ("browsers", "u1", "enter")
    }
    assert summary(engine.apply([purchase()]).changes) == {
        ("buyers", "u1", "enter"),
        ("also-buyers", "u1", "enter"),
        ("browsers", "u1", "exit"),
    }


def test_reference_by_name(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 100}, name="High Value")
    define(engine, "vip", {"segment": "High Value"})

    engine.apply([purchase(amount=500)])

    assert engine.members("vip") == {"u1"}


def test_references_chain_three_levels_in_one_batch(engine: Engine) -> None:
    define(engine, "a", {"field": "plan", "operator": "eq", "value": "pro"})
    define(engine, "b", {"segment": "a"}, {"field": "eventCount", "operator": "gte", "value": 1})
    define(engine, "c", {"segment": "b"})
    define(engine, "not-c", {"segment": "c", "operator": "not_in"})

    entered = engine.apply([identify(at=T0, plan="pro")])
    left = engine.apply([identify(at=T0 + 1, plan="free")])

    assert summary(entered.changes) == {
        ("a", "u1", "enter"),
        ("b", "u1", "enter"),
        ("c", "u1", "enter"),
    }
    assert summary(left.changes) == {
        ("a", "u1", "exit"),
        ("b", "u1", "exit"),
        ("c", "u1", "exit"),
        ("not-c", "u1", "enter"),
    }


def test_evaluation_order_follows_references_not_creation(engine: Engine) -> None:
    define(engine, "top", {"field": "plan", "operator": "eq", "value": "pro"})
    define(engine, "middle", {"segment": "top"})
    define(engine, "base", {"field": "country", "operator": "eq", "value": "FR"})
    # "top", created first, now depends on "base", created last.
    define(engine, "top", {"segment": "base"})

    result = engine.apply([identify(country="FR")])

    assert summary(result.changes) == {
        ("base", "u1", "enter"),
        ("top", "u1", "enter"),
        ("middle", "u1", "enter"),
    }


def test_a_referencing_segment_is_backfilled(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 100})
    engine.apply([purchase("rich", amount=500), purchase("poor", amount=5)])

    changes = define(engine, "not-hv", {"segment": "hv", "operator": "not_in"})

    assert summary(changes) == {("not-hv", "poor", "enter")}


def test_redefining_a_segment_updates_the_segments_referencing_it(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 100})
    define(engine, "vip", {"segment": "hv"})
    engine.apply([purchase(amount=50)])

    changes = define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 10})

    assert summary(changes) == {("hv", "u1", "enter"), ("vip", "u1", "enter")}


def test_self_reference_is_rejected(engine: Engine) -> None:
    with pytest.raises(RuleValidationError):
        define(engine, "s", {"segment": "s"})
    with pytest.raises(RuleValidationError):
        define(engine, "s", {"segment": "Myself", "operator": "not_in"}, name="Myself")


def test_cycles_are_rejected_and_leave_segments_unchanged(engine: Engine) -> None:
    define(engine, "a", {"field": "plan", "operator": "eq", "value": "pro"})
    define(engine, "b", {"segment": "a"})
    define(engine, "c", {"segment": "b"})

    with pytest.raises(RuleValidationError):
        define(engine, "a", {"segment": "b"})
    with pytest.raises(RuleValidationError):
        define(engine, "a", {"segment": "c"}, match="any")

    result = engine.apply([identify(plan="pro")])
    assert summary(result.changes) == {
        ("a", "u1", "enter"),
        ("b", "u1", "enter"),
        ("c", "u1", "enter"),
    }


def test_a_reference_to_an_unknown_segment_is_rejected(engine: Engine) -> None:
    with pytest.raises(RuleValidationError):
        define(engine, "s", {"segment": "nowhere"})


# -- computed attributes -----------------------------------------------------------------


def attribute(
    name: str, aggregate: str, event_type: str = "order", **options: Any
) -> ComputedAttribute:
    return ComputedAttribute.model_validate(
        {"name": name, "event_type": event_type, "aggregate": aggregate, **options}
    )


BOOKS = ({"field": "category", "operator": "eq", "value": "books"},)

COMPUTED = [
    attribute("orders", "count"),
    attribute("spend", "sum", property="amount"),
    attribute("cheapest", "min", property="amount"),
    attribute("dearest", "max", property="amount"),
    attribute("basket", "avg", property="amount"),
    attribute("firstChannel", "first", property="channel"),
    attribute("lastChannel", "last", property="channel"),
    attribute("channels", "distinct_count", property="channel"),
    attribute("bookOrders", "count", where=BOOKS),
    attribute("recentSpend", "sum", property="amount", within="1h"),
    attribute("recentBookSpend", "sum", property="amount", where=BOOKS, within="1h"),
    attribute(
        "appTouches",
        "count",
        event_type="*",
        where=({"field": "channel", "operator": "eq", "value": "app"},),
    ),
]


def order(at: int, user_id: str = "u1", **properties: Any) -> Event:
    return event(user_id, "order", at, properties)


def test_computed_attributes_of_every_aggregate(clock: ManualClock) -> None:
    engine = Engine(clock, attributes=COMPUTED)

    engine.apply(
        [
            order(T0 - 30 * MINUTE, amount=10, channel="web", category="books"),
            order(T0, amount=30, channel="app"),
            order(T0 - 2 * HOUR, amount=20.5, channel="email", category="books"),  # late
            order(T0 - 10 * MINUTE, amount="12"),
            event("u1", "page_view", T0, {"amount": 1000, "channel": "ads"}),
        ]
    )

    expected = {
        "orders": 4,
        "spend": 60.5,
        "cheapest": 10,
        "dearest": 30,
        "basket": 60.5 / 3,
        "firstChannel": "email",
        "lastChannel": "app",
        "channels": 3,
        "bookOrders": 2,
        "recentSpend": 40,
        "recentBookSpend": 10,
        "appTouches": 1,
    }
    assert pick(attributes(engine), expected) == expected

    engine.advance(T0 + HOUR)

    assert attributes(engine)["recentSpend"] == 30
    assert attributes(engine)["recentBookSpend"] == 0
    assert attributes(engine)["spend"] == 60.5


def test_rules_read_computed_attributes(clock: ManualClock) -> None:
    engine = Engine(clock, attributes=COMPUTED)
    engine.apply([identify()])
    define(engine, "omnichannel", {"field": "channels", "operator": "gte", "value": 2})
    define(engine, "recent-big", {"field": "recentSpend", "operator": "gt", "value": 35})
    define(engine, "no-min", {"field": "cheapest", "operator": "not_exists"})
    assert engine.segments_of("u1") == ["no-min"]

    result = engine.apply(
        [order(T0, amount=20, channel="web"), order(T0, amount=20, channel="app")]
    )
    assert summary(result.changes) == {
        ("omnichannel", "u1", "enter"),
        ("recent-big", "u1", "enter"),
        ("no-min", "u1", "exit"),
    }

    assert summary(engine.advance(window_end(T0, HOUR))) == {("recent-big", "u1", "exit")}


def test_computed_attributes_take_precedence_over_traits(clock: ManualClock) -> None:
    engine = Engine(clock, attributes=COMPUTED)
    define(engine, "many", {"field": "orders", "operator": "gte", "value": 1})

    engine.apply([identify(orders=10)])

    assert engine.members("many") == set()


def test_a_removed_computed_attribute_leaves_the_name_to_the_trait(clock: ManualClock) -> None:
    engine = Engine(clock, attributes=COMPUTED)
    define(engine, "many", {"field": "orders", "operator": "gte", "value": 3})
    engine.apply([identify(orders=10)])
    assert engine.members("many") == set()

    changes = engine.remove_attribute("orders")

    assert summary(changes) == {("many", "u1", "enter")}


def test_first_and_last_break_ties_by_arrival(clock: ManualClock) -> None:
    engine = Engine(clock, attributes=COMPUTED)

    engine.apply([order(T0, channel="a"), order(T0, channel="b"), order(T0, amount=1)])
    engine.apply([order(T0, channel="c")])

    assert attributes(engine)["firstChannel"] == "a"
    assert attributes(engine)["lastChannel"] == "c"


def test_first_and_last_keep_any_json_value(clock: ManualClock) -> None:
    engine = Engine(clock, attributes=COMPUTED)

    engine.apply([order(T0 - 1, channel={"name": "web"}), order(T0, channel=False)])

    assert attributes(engine)["firstChannel"] == {"name": "web"}
    assert attributes(engine)["lastChannel"] is False


def test_distinct_count_is_strict(clock: ManualClock) -> None:
    engine = Engine(clock, attributes=COMPUTED)
    values: list[Any] = [
        "web",
        "web",
        1,
        1.0,
        True,
        "1",
        [1],
        [1.0],
        [True],
        {"a": 1},
        {"a": 1.0},
        None,
    ]

    engine.apply([order(T0, channel=v) for v in values])

    # "web", 1 (= 1.0), True, "1", [1] (= [1.0]), [True], {"a": 1} (= {"a": 1.0})
    assert attributes(engine)["channels"] == 7


def test_distinct_count_is_zero_over_no_events(clock: ManualClock) -> None:
    engine = Engine(clock, attributes=COMPUTED)
    engine.apply([identify()])

    define(engine, "none", {"field": "channels", "operator": "eq", "value": 0})

    assert engine.members("none") == {"u1"}


def test_windowed_partial_aggregates_recompute_from_live_events(clock: ManualClock) -> None:
    engine = Engine(
        clock,
        attributes=[
            attribute("recentMin", "min", property="amount", within="1h"),
            attribute("recentMax", "max", property="amount", within="1h"),
            attribute("recentFirst", "first", property="channel", within="1h"),
            attribute("recentLast", "last", property="channel", within="1h"),
            attribute("recentChannels", "distinct_count", property="channel", within="1h"),
            attribute("recentAvg", "avg", property="amount", within="1h"),
        ],
    )
    early, late = T0 - 50 * MINUTE, T0
    engine.apply([order(late, amount=10, channel="app"), order(early, amount=100, channel="web")])
    expected = {
        "recentMin": 10,
        "recentMax": 100,
        "recentFirst": "web",
        "recentLast": "app",
        "recentChannels": 2,
        "recentAvg": 55,
    }
    assert pick(attributes(engine), expected) == expected

    engine.advance(window_end(early, HOUR))
    expected = {
        "recentMin": 10,
        "recentMax": 10,
        "recentFirst": "app",
        "recentLast": "app",
        "recentChannels": 1,
        "recentAvg": 10,
    }
    assert pick(attributes(engine), expected) == expected

    engine.advance(window_end(late, HOUR))
    expected = {
        "recentMin": None,
        "recentMax": None,
        "recentFirst": None,
        "recentLast": None,
        "recentChannels": 0,
        "recentAvg": None,
    }
    assert pick(attributes(engine), expected) == expected


# -- new users ---------------------------------------------------------------------------


HOLD_WITHOUT_DATA = [
    pytest.param({"field": "plan", "operator": "not_exists"}, id="trait not_exists"),
    pytest.param({"not": {"field": "plan", "operator": "eq", "value": "pro"}}, id="not eq"),
    pytest.param({"field": "totalSpent", "operator": "eq", "value": 0}, id="totalSpent 0"),
    pytest.param({"field": "purchaseCount", "operator": "lt", "value": 1}, id="purchaseCount 0"),
    pytest.param({"field": "cheapest", "operator": "not_exists"}, id="computed min missing"),
    pytest.param({"field": "channels", "operator": "eq", "value": 0}, id="distinct_count 0"),
    pytest.param({"event": "purchase", "count": {"operator": "eq", "value": 0}}, id="count 0"),
    pytest.param({"not": {"event": "purchase", "within": "1d"}}, id="not within"),
    pytest.param(
        {
            "not": {
                "event": "purchase",
                "aggregate": "min",
                "property": "amount",
                "operator": "gte",
                "value": 0,
            }
        },
        id="not min over none",
    ),
]


@pytest.mark.parametrize("condition", HOLD_WITHOUT_DATA)
def test_a_new_user_enters_segments_that_hold_without_data(
    clock: ManualClock, condition: dict[str, Any]
) -> None:
    engine = Engine(clock, attributes=COMPUTED)
    define(engine, "s", condition)

    result = engine.apply([event(event_type="page_view")])

    assert summary(result.changes) == {("s", "u1", "enter")}


@pytest.mark.parametrize("value", ["free", 1, ["a"]], ids=["string", "number", "list"])
def test_a_new_user_after_many_others_with_a_trait(engine: Engine, value: Any) -> None:
    define(engine, "no-plan", {"field": "plan", "operator": "not_exists"})
    engine.apply([identify(f"old{i}", plan=value) for i in range(1500)])

    result = engine.apply([event("new")])

    assert summary(result.changes) == {("no-plan", "new", "enter")}


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "firstChannel", "operator": "not_exists"},
        {"field": "lastChannel", "operator": "not_exists"},
        {"field": "channels", "operator": "eq", "value": 0},
        {"field": "cheapest", "operator": "not_exists"},
        {"field": "basket", "operator": "not_exists"},
        {"field": "orders", "operator": "eq", "value": 0},
    ],
    ids=lambda condition: condition["field"],
)
def test_a_new_user_after_many_others_with_an_attribute(
    clock: ManualClock, condition: dict[str, Any]
) -> None:
    engine = Engine(clock, attributes=COMPUTED)
    define(engine, "s", condition)
    engine.apply([order(T0, amount=1, channel="web", user_id=f"old{i}") for i in range(1500)])

    result = engine.apply([event("new", "page_view")])

    assert summary(result.changes) == {("s", "new", "enter")}


# -- STATIC segments ---------------------------------------------------------------------


def static(engine: Engine, segment_id: str) -> None:
    assert engine.upsert_segment(SegmentDefinition(segment_id, segment_id, type="STATIC")) == []


def test_static_members_add_remove_replace(engine: Engine) -> None:
    engine.apply([identify("a"), identify("b"), identify("c")])
    static(engine, "list")

    assert summary(engine.set_static_members("list", ["a", "b"], mode="add")) == {
        ("list", "a", "enter"),
        ("list", "b", "enter"),
    }
    assert engine.set_static_members("list", ["b"], mode="add") == []
    assert summary(engine.set_static_members("list", ["a"], mode="remove")) == {
        ("list", "a", "exit")
    }
    assert summary(engine.set_static_members("list", ["b", "c"], mode="replace")) == {
        ("list", "c", "enter")
    }
    assert engine.members("list") == {"b", "c"}
    assert summary(engine.set_static_members("list", [], mode="replace")) == {
        ("list", "b", "exit"),
        ("list", "c", "exit"),
    }


def test_static_segment_defined_before_its_users(engine: Engine) -> None:
    static(engine, "list")

    changes = engine.set_static_members("list", ["a", "b"], mode="add")

    assert summary(changes) == {("list", "a", "enter"), ("list", "b", "enter")}
    assert engine.members("list") == {"a", "b"}


def test_static_members_may_be_new_users(engine: Engine) -> None:
    engine.apply([identify("a")])
    static(engine, "list")
    engine.set_static_members("list", ["a"], mode="add")

    changes = engine.set_static_members("list", ["new"], mode="add")

    assert summary(changes) == {("list", "new", "enter")}
    assert engine.members("list") == {"a", "new"}


def test_static_membership_survives_events(engine: Engine) -> None:
    engine.apply([identify("a")])
    static(engine, "list")
    engine.set_static_members("list", ["a"], mode="add")

    assert engine.apply([purchase("a")]).changes == []
    assert engine.members("list") == {"a"}


def test_members_cannot_be_set_on_a_dynamic_segment(engine: Engine) -> None:
    define(engine, "dyn", {"field": "plan", "operator": "exists"})

    with pytest.raises(ValueError, match="STATIC"):
        engine.set_static_members("dyn", ["a"])


def test_dynamic_segment_follows_a_static_one(engine: Engine) -> None:
    engine.apply([purchase("a"), purchase("b"), identify("c")])
    static(engine, "vip")
    define(
        engine,
        "vip-buyers",
        {"segment": "vip"},
        {"field": "purchaseCount", "operator": "gte", "value": 1},
    )
    define(engine, "others", {"segment": "vip", "operator": "not_in"})
    assert engine.members("others") == {"a", "b", "c"}

    changes = engine.set_static_members("vip", ["a", "c"], mode="add")

    assert summary(changes) == {
        ("vip", "a", "enter"),
        ("vip", "c", "enter"),
        ("vip-buyers", "a", "enter"),
        ("others", "a", "exit"),
        ("others", "c", "exit"),
    }
    assert engine.members("vip-buyers") == {"a"}
    assert summary(engine.apply([purchase("c")]).changes) == {("vip-buyers", "c", "enter")}


def test_dynamic_segment_defined_after_static_members_are_set(engine: Engine) -> None:
    engine.apply([purchase("a"), purchase("b")])
    static(engine, "vip")
    engine.set_static_members("vip", ["a"], mode="add")

    changes = define(engine, "vip-buyers", {"segment": "vip"}, {"event": "purchase"})

    assert summary(changes) == {("vip-buyers", "a", "enter")}


def test_explain_a_static_segment(engine: Engine) -> None:
    engine.apply([identify("a"), identify("b")])
    static(engine, "list")
    engine.set_static_members("list", ["a"], mode="add")

    member = engine.explain("a", "list").to_json()
    other = engine.explain("b", "list").to_json()

    assert (member["member"], member["held"], member["rules"]) == (True, True, None)
    assert (other["member"], other["held"], other["rules"]) == (False, False, None)


# -- deleting a user ---------------------------------------------------------------------


def test_delete_user_emits_exits_and_erases_the_profile(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 100})
    define(engine, "pro", {"field": "plan", "operator": "eq", "value": "pro"})
    engine.apply([purchase(amount=500), identify(plan="pro"), identify("other", plan="pro")])

    changes = engine.delete_user("u1")

    assert summary(changes) == {("hv", "u1", "exit"), ("pro", "u1", "exit")}
    assert engine.profile("u1") is None
    assert engine.segments_of("u1") == []
    assert engine.members("hv") == set()
    assert engine.members("pro") == {"other"}
    with pytest.raises(KeyError):
        engine.delete_user("u1")


def test_a_deleted_user_id_starts_afresh(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 100})
    engine.apply([purchase(amount=500), identify(plan="pro")])
    engine.delete_user("u1")

    result = engine.apply([purchase(amount=50)])

    assert result.changes == []
    assert traits(engine) == {}
    assert attributes(engine)["totalSpent"] == 50
    assert attributes(engine)["eventCount"] == 1


def test_a_deleted_user_is_not_brought_back_by_time(engine: Engine) -> None:
    define(
        engine, "inactive", {"not": {"field": "lastSeen", "operator": "within_last", "value": "1h"}}
    )
    define(engine, "gone", {"not": {"event": "login", "within": "1h"}})
    engine.apply([event(event_type="login", at=T0)])
    engine.delete_user("u1")

    changes = engine.advance(T0 + 2 * HOUR)

    assert changes == []
    assert engine.members("inactive") == set()
    assert engine.members("gone") == set()


def test_deleting_a_user_leaves_window_counts_of_others_intact(engine: Engine) -> None:
    define(
        engine, "busy", {"event": "login", "within": "1h", "count": {"operator": "gte", "value": 2}}
    )
    engine.apply(
        [event("a", "login"), event("a", "login"), event("b", "login"), event("b", "login")]
    )
    engine.delete_user("a")

    assert summary(engine.advance(window_end(T0, HOUR))) == {("busy", "b", "exit")}


# -- invalid events ----------------------------------------------------------------------


def test_invalid_events_are_rejected_with_a_reason_and_the_batch_goes_on(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 100})
    batch: list[Any] = [
        purchase("a", amount=500),
        Event("", "purchase", T0, {}),
        Event("x" * 257, "purchase", T0, {}),
        Event("b", "not allowed!", T0, {}),
        Event("b", "", T0, {}),
        Event("b", "purchase", "yesterday", {}),  # type: ignore[arg-type]
        Event("b", "purchase", True, {}),
        Event("b", "purchase", T0, ["amount"]),  # type: ignore[arg-type]
        Event("b", "identify", T0, {}, ["plan"]),  # type: ignore[arg-type]
        purchase("b", amount=200),
    ]

    result = engine.apply(batch)

    assert [r.index for r in result.rejected] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(r.reason for r in result.rejected)
    assert summary(result.changes) == {("hv", "a", "enter"), ("hv", "b", "enter")}
    assert sorted(result.profiles) == ["a", "b"]
    assert attributes(engine, "b")["eventCount"] == 1


MALFORMED: list[Any] = [
    pytest.param(Event(None, "purchase", T0, {}), id="user id null"),  # type: ignore[arg-type]
    pytest.param(Event(7, "purchase", T0, {}), id="user id number"),  # type: ignore[arg-type]
    pytest.param(Event("b", ["purchase"], T0, {}), id="event type list"),  # type: ignore[arg-type]
    pytest.param(Event("b", {"type": "x"}, T0, {}), id="event type object"),  # type: ignore[arg-type]
    pytest.param(Event("b", None, T0, {}), id="event type null"),  # type: ignore[arg-type]
    pytest.param(Event("b", "purchase", 1.5, {}), id="timestamp float"),  # type: ignore[arg-type]
    pytest.param(Event("b", "purchase", None, {}), id="timestamp null"),  # type: ignore[arg-type]
    pytest.param(Event("b", "purchase", T0, None), id="properties null"),  # type: ignore[arg-type]
    pytest.param(Event("b", "purchase", T0, {}, "pro"), id="traits string"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("seen", [False, True], ids=["new types", "types seen before"])
@pytest.mark.parametrize("malformed", MALFORMED)
def test_a_malformed_event_is_rejected_between_valid_ones(
    engine: Engine, malformed: Event, seen: bool
) -> None:
    define(engine, "buyers", {"event": "purchase"})
    if seen:
        engine.apply([Event("z", "purchase", T0, {}, {"plan": "free"})])

    result = engine.apply([purchase("a"), malformed, purchase("c")])

    assert [r.index for r in result.rejected] == [1]
    assert result.rejected[0].reason
    assert engine.members("buyers") == {"a", "c", "z"} if seen else {"a", "c"}
    assert engine.profile("b") is None


def test_a_batch_of_only_invalid_events_changes_nothing(engine: Engine) -> None:
    result = engine.apply([Event("", "purchase", T0, {})])

    assert result.changes == []
    assert result.profiles == []
    assert len(result.rejected) == 1
    assert engine.profile("") is None


# -- explain -----------------------------------------------------------------------------


def test_explain_shows_held_and_actual_values_per_condition(engine: Engine) -> None:
    define(engine, "other", {"field": "blocked", "operator": "eq", "value": True})
    define(
        engine,
        "s",
        {"field": "plan", "operator": "eq", "value": "pro"},
        {"field": "totalSpent", "operator": "gt", "value": 100},
        {"event": "purchase", "within": "1d", "count": {"operator": "gte", "value": 2}},
        {"not": {"field": "country", "operator": "in", "value": ["FR", "DE"]}},
        {"segment": "other", "operator": "not_in"},
    )
    engine.apply([identify(plan="pro", country="FR"), purchase(amount=150)])

    explanation = engine.explain("u1", "s").to_json()

    assert explanation["segmentId"] == "s"
    assert explanation["userId"] == "u1"
    assert explanation["member"] is False
    assert explanation["held"] is False
    root = explanation["rules"]
    assert root["held"] is False
    plan, spent, purchases, negation, reference = root["conditions"]
    expected_plan = {
        "held": True,
        "field": "plan",
        "operator": "eq",
        "value": "pro",
        "actual": "pro",
    }
    expected_spent = {
        "held": True,
        "field": "totalSpent",
        "operator": "gt",
        "value": 100,
        "actual": 150,
    }
    expected_purchases = {"held": False, "event": "purchase", "value": 2, "actual": 1}
    expected_country = {"held": True, "field": "country", "value": ["FR", "DE"], "actual": "FR"}
    expected_reference = {"held": True, "segment": "other", "actual": False}
    assert pick(plan, expected_plan) == expected_plan
    assert pick(spent, expected_spent) == expected_spent
    assert pick(purchases, expected_purchases) == expected_purchases
    assert negation["held"] is False
    assert pick(negation["conditions"][0], expected_country) == expected_country
    assert pick(reference, expected_reference) == expected_reference


def test_explain_agrees_with_membership(engine: Engine) -> None:
    define(engine, "hv", {"field": "totalSpent", "operator": "gt", "value": 100})
    engine.apply([purchase(amount=500)])

    explanation = engine.explain("u1", "hv").to_json()

    assert explanation["member"] is True
    assert explanation["held"] is True
    assert explanation["rules"]["conditions"][0]["actual"] == 500


def test_explain_shows_missing_values(engine: Engine) -> None:
    define(
        engine, "s", aggregate("min", "lt", 5), {"field": "plan", "operator": "exists"}, match="any"
    )
    engine.apply([identify()])

    conditions = engine.explain("u1", "s").to_json()["rules"]["conditions"]

    assert [(c["held"], c["actual"]) for c in conditions] == [(False, None), (False, None)]
