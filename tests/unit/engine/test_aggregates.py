"""Per-user aggregates fed directly with batches of events (``docs/rules.md``)."""

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audience_manager.engine.aggregates import Aggregate, bucket_width, create_aggregate
from audience_manager.engine.frames import EventFrame
from audience_manager.rules.compiler import AggregateSpec
from audience_manager.rules.model import AttributeCondition

T0 = 1_700_000_000_000
HOUR = 3_600_000


def make(
    aggregate: str,
    property: str | None = None,
    where: tuple[AttributeCondition, ...] = (),
    within_ms: int | None = None,
) -> Aggregate:
    spec = AggregateSpec.create("order", aggregate, property, where, within_ms)
    result = create_aggregate(spec)
    result.resize(8)
    return result


class Feeder:
    """Feeds batches to one aggregate, numbering events in arrival order."""

    def __init__(self, aggregate: Aggregate) -> None:
        self.aggregate = aggregate
        self.seq = 0

    def feed(self, events: list[tuple[int, int, dict[str, Any]]], now: int = T0) -> list[int]:
        """``events`` are (row, event time, properties); returns the rows reported changed."""
        rows = np.array([e[0] for e in events], dtype=np.int64)
        ts = np.array([e[1] for e in events], dtype=np.int64)
        seq = np.arange(self.seq, self.seq + len(events), dtype=np.int64)
        self.seq += len(events)
        frame = EventFrame([e[2] for e in events])
        return sorted(int(r) for r in self.aggregate.feed(rows, frame, ts, seq, now))

    def value(self, row: int = 0) -> Any:
        return self.aggregate.vector(np.array([row], dtype=np.int64)).value(0)


@pytest.mark.parametrize(
    ("window", "width"),
    [
        (60_000, 1_000),
        (100_000, 1_000),
        (200_000, 2_000),
        (HOUR, 36_000),
        (365 * 24 * HOUR, 315_360_000),
    ],
)
def test_bucket_width_is_one_percent_of_the_window_and_at_least_a_second(
    window: int, width: int
) -> None:
    assert bucket_width(window) == width


# -- exact sums --------------------------------------------------------------------------

amounts = st.lists(
    st.one_of(
        st.integers(min_value=-(10**6), max_value=10**6),
        st.floats(min_value=-(10**6), max_value=10**6, allow_nan=False),
        st.decimals(min_value=-1000, max_value=1000, places=6).map(float),
    ),
    max_size=40,
)


@given(values=amounts, data=st.data())
def test_sum_is_the_sum_of_rounded_millionths_in_any_order(values: list[float], data: Any) -> None:
    expected_millionths = sum(round(v * 1_000_000) for v in values)
    shuffled = data.draw(st.permutations(values))
    cut = data.draw(st.integers(min_value=0, max_value=len(values)))
    feeder = Feeder(make("sum", "amount"))

    for batch in (shuffled[:cut], shuffled[cut:]):
        if batch:
            feeder.feed([(0, T0, {"amount": v}) for v in batch])

    assert feeder.value() == expected_millionths / 1_000_000


@given(values=st.lists(st.decimals(min_value=0, max_value=1000, places=2).map(float), min_size=1))
def test_avg_is_the_exact_sum_divided_by_the_count(values: list[float]) -> None:
    feeder = Feeder(make("avg", "amount"))

    feeder.feed([(0, T0, {"amount": v}) for v in values])

    millionths = sum(round(v * 1_000_000) for v in values)
    assert feeder.value() == float(Fraction(millionths, 1_000_000 * len(values)))


def test_sum_and_avg_skip_values_that_are_not_numbers() -> None:
    total, average = Feeder(make("sum", "amount")), Feeder(make("avg", "amount"))
    properties: list[dict[str, Any]] = [
        {"amount": 4},
        {"amount": "4"},
        {"amount": True},
        {"amount": None},
        {"amount": [4]},
        {},
        {"amount": 2.5},
    ]
    for feeder in (total, average):
        feeder.feed([(0, T0, p) for p in properties])

    assert total.value() == 6.5
    assert average.value() == 3.25


def test_totals_over_no_events() -> None:
    assert Feeder(make("count")).value(3) == 0
    assert Feeder(make("sum", "amount")).value(3) == 0
    assert Feeder(make("avg", "amount")).value(3) is None


def test_dotted_property_paths() -> None:
    feeder = Feeder(make("sum", "item.price"))

    feeder.feed(
        [
            (0, T0, {"item": {"price": 3}}),
            (0, T0, {"item": {"price": {"net": 1}}}),
            (0, T0, {"item": "price"}),
            (0, T0, {"item.price": 100}),
        ]
    )

    assert feeder.value() == 3


def test_where_filters_events_before_aggregating() -> None:
    books = AttributeCondition(field="category", operator="in", value=["books", "comics"])
    feeder = Feeder(make("count", where=(books,)))

    changed = feeder.feed(
        [
            (0, T0, {"category": "books"}),
            (1, T0, {"category": "games"}),
            (0, T0, {"category": "comics"}),
            (2, T0, {}),
        ]
    )

    assert changed == [0]
    assert [feeder.value(row) for row in (0, 1, 2)] == [2, 0, 0]


# -- windows -----------------------------------------------------------------------------


@pytest.mark.parametrize("aggregate", ["count", "sum", "avg"])
def test_window_totals_count_until_the_end_of_the_bucket(aggregate: str) -> None:
    width = bucket_width(HOUR)
    t = (T0 // width) * width + 123
    end = (t // width + 1) * width + HOUR
    feeder = Feeder(make(aggregate, None if aggregate == "count" else "amount", within_ms=HOUR))
    feeder.feed([(0, t, {"amount": 2}), (0, t + width, {"amount": 4})], now=t)

    assert list(feeder.aggregate.expire(end - 1)) == []
    assert feeder.value() == {"count": 2, "sum": 6, "avg": 3}[aggregate]

    assert list(feeder.aggregate.expire(end)) == [0]
    assert feeder.value() == {"count": 1, "sum": 4, "avg": 4}[aggregate]

    assert list(feeder.aggregate.expire(end + width)) == [0]
    assert feeder.value() == {"count": 0, "sum": 0, "avg": None}[aggregate]


@pytest.mark.parametrize(
    "aggregate", ["count", "sum", "min", "max", "first", "last", "distinct_count"]
)
def test_an_event_whose_bucket_has_left_the_window_is_not_counted(aggregate: str) -> None:
    width = bucket_width(HOUR)
    t = (T0 // width) * width
    feeder = Feeder(make(aggregate, None if aggregate == "count" else "amount", within_ms=HOUR))

    changed = feeder.feed([(0, t, {"amount": 5})], now=t + width + HOUR)

    assert changed == []
    assert feeder.value() == (0 if aggregate in ("count", "sum", "distinct_count") else None)


def test_erased_rows_are_not_subtracted_again_when_their_bucket_expires() -> None:
    feeder = Feeder(make("sum", "amount", within_ms=HOUR))
    feeder.feed([(0, T0, {"amount": 5}), (1, T0, {"amount": 7})])

    feeder.aggregate.clear(0)
    feeder.aggregate.expire(T0 + 2 * HOUR)

    assert feeder.value(0) == 0
    assert feeder.value(1) == 0


@pytest.mark.parametrize(
    ("aggregate", "before", "after"),
    [
        ("min", 1, 1),
        ("max", 9, 7),
        ("first", 9, 1),
        ("last", 7, 7),
        ("distinct_count", 3, 2),
    ],
)
def test_windowed_partials_recompute_from_live_buckets(
    aggregate: str, before: Any, after: Any
) -> None:
    width = bucket_width(HOUR)
    early = (T0 // width) * width
    late = early + 10 * width + 5
    feeder = Feeder(make(aggregate, "amount", within_ms=HOUR))
    feeder.feed(
        [(0, early, {"amount": 9}), (0, late, {"amount": 7}), (0, late - 1, {"amount": 1})],
        now=late,
    )
    assert feeder.value() == before

    assert list(feeder.aggregate.expire(early + width + HOUR)) == [0]

    # the events at ``late - 1`` and ``late`` share a bucket, so both stay
    assert feeder.value() == after


# -- min, max, first, last, distinct_count -----------------------------------------------


@pytest.mark.parametrize(("aggregate", "expected"), [("min", -2.5), ("max", 10)])
def test_min_and_max_use_numbers_only(aggregate: str, expected: float) -> None:
    feeder = Feeder(make(aggregate, "amount"))

    feeder.feed(
        [(0, T0, {"amount": v}) for v in [3, True, "-100", None, [-50], 10, -2.5, False, {"a": 99}]]
    )

    assert feeder.value() == expected


@pytest.mark.parametrize("aggregate", ["min", "max", "first", "last"])
def test_missing_over_no_usable_values(aggregate: str) -> None:
    feeder = Feeder(make(aggregate, "amount"))

    feeder.feed([(0, T0, {}), (0, T0, {"amount": None})])

    assert feeder.value() is None


def test_first_and_last_by_event_time_then_arrival() -> None:
    first, last = Feeder(make("first", "v")), Feeder(make("last", "v"))
    batches: list[list[tuple[int, int, dict[str, Any]]]] = [
        [(0, T0, {"v": "a"}), (0, T0, {"v": "b"}), (0, T0 + 1, {})],
        [(0, T0 - 1, {"v": "early"}), (0, T0 + 1, {"v": "late"}), (0, T0 + 1, {"v": "later"})],
    ]
    for feeder in (first, last):
        feeder.feed(batches[0])
    assert (first.value(), last.value()) == ("a", "b")

    for feeder in (first, last):
        feeder.feed(batches[1])
    assert (first.value(), last.value()) == ("early", "later")


def test_distinct_count_uses_strict_equality() -> None:
    feeder = Feeder(make("distinct_count", "v"))
    values: list[Any] = [
        1,
        1.0,
        True,
        "1",
        [1, "a"],
        [1.0, "a"],
        ["a", 1],
        {"k": [1]},
        {"k": [1.0]},
        {"k": [True]},
        None,
        2**53 + 1,
        2**53,
    ]

    feeder.feed([(0, T0, {"v": v}) for v in values] + [(0, T0, {})])

    # 1 = 1.0; True; "1"; [1, "a"] = [1.0, "a"]; ["a", 1]; {"k": [1]} = {"k": [1.0]};
    # {"k": [True]}; 2**53 + 1; 2**53
    assert feeder.value() == 9


def test_cleared_rows_forget_their_values() -> None:
    for aggregate in ("count", "sum", "min", "max", "first", "last", "distinct_count"):
        feeder = Feeder(make(aggregate, None if aggregate == "count" else "amount"))
        feeder.feed([(0, T0, {"amount": 4}), (1, T0, {"amount": 6})])

        feeder.aggregate.clear(0)

        expected = 0 if aggregate in ("count", "sum", "distinct_count") else None
        assert feeder.value(0) == expected, aggregate
        assert feeder.value(1) == (1 if aggregate in ("count", "distinct_count") else 6), aggregate
