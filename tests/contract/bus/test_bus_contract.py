"""The event-bus contract, run against every backend in ``BACKENDS``.

Written against the ``EventBus`` / ``Consumer`` port only. Each test gets a fresh topic,
so backends that share a server across tests stay isolated. The Kafka backend runs on the
session's broker (``tests/services/kafka.py``); where a test needs an exact high
watermark and the broker does not report one (tansu), it expects the offsets that
``publish`` acknowledged instead of asking ``end_offsets``, or is skipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from services.kafka import KafkaBroker

from audience_manager.bus import BusError, Consumer, EventBus, Record
from audience_manager.bus.embedded import EmbeddedEventBus
from audience_manager.bus.kafka import KafkaEventBus

BACKENDS = ["embedded", "kafka"]
PARTITIONS = 4


def build_bus(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> EventBus:
    """A bus of ``PARTITIONS`` partitions on ``backend``."""
    if backend == "embedded":
        return EmbeddedEventBus(tmp_path / "log", partitions=PARTITIONS)
    if backend == "kafka":
        broker: KafkaBroker = request.getfixturevalue("kafka_broker")
        return KafkaEventBus(broker.bootstrap, partitions=PARTITIONS, timeout=10)
    raise AssertionError(f"unknown backend {backend}")


@pytest.fixture(params=BACKENDS)
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventBus]:
    built = build_bus(request.param, request, tmp_path)
    yield built
    built.close()


@pytest.fixture
def exact_ends(request: pytest.FixtureRequest, bus: EventBus) -> None:
    """Skip unless ``end_offsets`` of ``bus`` is exact (tansu's is not)."""
    if isinstance(bus, KafkaEventBus):
        broker: KafkaBroker = request.getfixturevalue("kafka_broker")
        if not broker.exact_high_watermark:
            pytest.skip("the broker's high watermark is inexact (tansu)")


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def drain(consumer: Consumer, count: int, deadline: float = 10.0) -> list[Record]:
    """Poll until ``count`` records have arrived (fails after ``deadline`` seconds)."""
    records: list[Record] = []
    give_up = time.monotonic() + deadline
    while len(records) < count:
        assert time.monotonic() < give_up, f"only {len(records)} of {count} records arrived"
        records.extend(consumer.poll(timeout=0.5))
    return records


def by_partition(records: list[Record]) -> dict[int, list[Record]]:
    grouped: dict[int, list[Record]] = {}
    for record in records:
        grouped.setdefault(record.partition, []).append(record)
    return grouped


def sample(count: int, prefix: str = "user") -> list[tuple[str, bytes]]:
    return [(f"{prefix}-{i % 37}", f"value {i}".encode()) for i in range(count)]


def ends_of(acks: list[tuple[int, int]]) -> dict[int, int]:
    """The end offset of every partition after the acknowledged records (from empty)."""
    return {p: 1 + max((o for q, o in acks if q == p), default=-1) for p in range(PARTITIONS)}


def test_published_records_come_back_with_their_partition_and_offset(
    bus: EventBus, topic: str
) -> None:
    records = sample(100)
    before = time.time() * 1000
    acks = bus.publish(topic, records)
    after = time.time() * 1000
    assert len(acks) == len(records)
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        got = drain(consumer, len(records))
    assert len(got) == len(records)
    found = {(r.partition, r.offset): r for r in got}
    for (key, value), (partition, offset) in zip(records, acks, strict=True):
        record = found[(partition, offset)]
        assert (record.topic, record.key, record.value) == (topic, key, value)
        assert before - 1000 <= record.timestamp <= after + 1000


def test_a_key_always_lands_on_the_same_partition(bus: EventBus, topic: str) -> None:
    keys = [f"user-{i}" for i in range(50)]
    first = bus.publish(topic, [(key, b"1") for key in keys])
    second = bus.publish(topic, [(key, b"2") for key in reversed(keys)])
    assert [p for p, _ in first] == [bus.partition_for(key) for key in keys]
    assert [p for p, _ in reversed(second)] == [p for p, _ in first]
    assert {p for p, _ in first} == set(range(PARTITIONS))  # 50 keys spread over all
    assert all(0 <= bus.partition_for(key) < PARTITIONS for key in ["", "é", "x" * 300])


def test_offsets_are_sequential_per_partition_in_publish_order(bus: EventBus, topic: str) -> None:
    acks: list[tuple[int, int]] = []
    for start in range(0, 120, 17):
        acks.extend(bus.publish(topic, sample(17, prefix=f"b{start}")))
    per_partition: dict[int, list[int]] = {}
    for partition, offset in acks:
        per_partition.setdefault(partition, []).append(offset)
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets)))


def test_a_publish_with_an_invalid_record_writes_nothing(bus: EventBus, topic: str) -> None:
    bus.publish(topic, sample(10))
    before = bus.end_offsets(topic)
    bad: list[tuple[str, bytes]] = [*sample(5), ("user-x", "not bytes")]  # type: ignore[list-item]
    with pytest.raises(TypeError):
        bus.publish(topic, bad)
    with pytest.raises(TypeError):
        bus.publish(topic, [*sample(5), (7, b"key is not a str")])  # type: ignore[list-item]
    assert bus.end_offsets(topic) == before
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        assert len(drain(consumer, 10)) == 10
        assert consumer.poll(timeout=0.05) == []


def test_records_published_many_at_a_time_land_where_publish_puts_them(
    bus: EventBus, topic: str
) -> None:
    records = [*sample(300), ("", b"empty key"), ("é", b"non-ASCII key")]
    keys, values = [k for k, _ in records], [v for _, v in records]
    assert bus.publish_many(topic, keys, values) is None
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        got = drain(consumer, len(records))
    assert sorted((r.key, r.value) for r in got) == sorted(records)
    assert all(r.partition == bus.partition_for(r.key) for r in got)
    # Within a partition, in the order given.
    for partition, found in by_partition(got).items():
        assert [r.value for r in found] == [
            v for k, v in records if bus.partition_for(k) == partition
        ]
    bus.publish_many(topic, [], [])
    with pytest.raises(ValueError, match="keys for"):
        bus.publish_many(topic, keys, values[:-1])
    with pytest.raises(TypeError):
        bus.publish_many(topic, ["user-x"], ["not bytes"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        bus.publish_many(topic, [7], [b"key is not a str"])  # type: ignore[list-item]
    with bus.consumer(topic, "g2") as consumer:
        consumer.assign()
        assert len(drain(consumer, len(records))) == len(records)
        assert consumer.poll(timeout=0.05) == []


def test_an_empty_publish_is_a_no_op(bus: EventBus, topic: str) -> None:
    assert bus.publish(topic, []) == []
    assert bus.end_offsets(topic) == dict.fromkeys(range(PARTITIONS), 0)


def test_records_of_a_partition_come_in_offset_order_and_partitions_share_a_poll(
    bus: EventBus, topic: str
) -> None:
    for _ in range(5):
        bus.publish(topic, sample(200))
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        # Fair shares are of what has been fetched: give a remote broker's answers for
        # every partition time to arrive before judging.
        first = consumer.poll(max_records=1, timeout=5.0)
        time.sleep(0.5)
        while len(first) < 160:  # fewer than any one partition holds (at least 215)
            batch = consumer.poll(max_records=40, timeout=1.0)
            assert 0 < len(batch) <= 40
            first.extend(batch)
        assert {r.partition for r in first} == set(range(PARTITIONS))  # none starves
        rest = drain(consumer, 1000 - len(first))
    for records in by_partition(first + rest).values():
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(offsets)))


def test_seek_and_positions(bus: EventBus, topic: str) -> None:
    acks = bus.publish(topic, [("same-key", str(i).encode()) for i in range(30)])
    partition = acks[0][0]
    with bus.consumer(topic, "g") as consumer:
        consumer.assign([partition])
        assert consumer.positions() == {partition: 0}
        assert [r.offset for r in drain(consumer, 30)] == list(range(30))
        assert consumer.positions() == {partition: 30}
        consumer.seek({partition: 12})
        assert consumer.positions() == {partition: 12}
        again = drain(consumer, 18)
        assert [r.value for r in again] == [str(i).encode() for i in range(12, 30)]
        consumer.seek({partition: 30})
        assert consumer.poll(timeout=0.05) == []
        other = (partition + 1) % PARTITIONS
        with pytest.raises(BusError):
            consumer.seek({other: 0})


def test_reassigning_keeps_positions_of_partitions_that_stay(bus: EventBus, topic: str) -> None:
    ends = ends_of(bus.publish(topic, sample(40)))
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        drain(consumer, 40)
        consumer.assign([0, 1])
        assert consumer.positions() == {0: ends[0], 1: ends[1]}


def test_commit_and_committed(bus: EventBus, topic: str) -> None:
    ends = ends_of(bus.publish(topic, sample(60)))
    assert ends[0] >= 2
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        assert consumer.committed() == {}
        drain(consumer, 60)
        consumer.commit()
        assert consumer.committed() == ends
        consumer.commit({0: 1})
        assert consumer.committed() == {**ends, 0: 1}
    with bus.consumer(topic, "g") as resumed:
        resumed.assign()
        assert resumed.positions() == {**ends, 0: 1}
        again = drain(resumed, ends[0] - 1)
    assert [(r.partition, r.offset) for r in again] == [(0, o) for o in range(1, ends[0])]


def test_consumer_groups_are_independent(bus: EventBus, topic: str) -> None:
    bus.publish(topic, sample(25))
    with bus.consumer(topic, "a") as first, bus.consumer(topic, "b") as second:
        first.assign()
        second.assign()
        assert len(drain(first, 25)) == 25
        first.commit()
        assert second.committed() == {}
        assert len(drain(second, 25)) == 25
    with bus.consumer(topic, "b") as fresh:
        fresh.assign()
        assert len(drain(fresh, 25)) == 25  # b never committed


def test_a_consumer_sees_records_published_after_it_started(bus: EventBus, topic: str) -> None:
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        assert consumer.poll(timeout=0.05) == []
        bus.publish(topic, sample(5))
        assert len(drain(consumer, 5)) == 5


def test_poll_returns_nothing_after_its_timeout(bus: EventBus, topic: str) -> None:
    bus.publish(topic, sample(3))
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        drain(consumer, 3)
        started = time.monotonic()
        assert consumer.poll(timeout=0.2) == []
        assert 0.2 <= time.monotonic() - started < 1.0


@pytest.mark.usefixtures("exact_ends")
def test_end_offsets_follow_what_was_published(bus: EventBus, topic: str) -> None:
    assert bus.end_offsets(topic) == dict.fromkeys(range(PARTITIONS), 0)
    acks: list[tuple[int, int]] = []
    for start in range(0, 33, 11):
        acks.extend(bus.publish(topic, sample(11, prefix=f"b{start}")))
    assert bus.end_offsets(topic) == ends_of(acks)


def test_beginning_offsets_stay_at_zero_while_everything_is_retained(
    bus: EventBus, topic: str
) -> None:
    empty = dict.fromkeys(range(PARTITIONS), 0)
    assert bus.beginning_offsets(topic) == empty
    bus.publish(topic, sample(33))
    assert bus.beginning_offsets(topic) == empty


def test_polling_needs_an_assignment(bus: EventBus, topic: str) -> None:
    with bus.consumer(topic, "g") as consumer, pytest.raises(BusError):
        consumer.poll(timeout=0)


def test_a_budget_smaller_than_the_partitions_with_records(bus: EventBus, topic: str) -> None:
    bus.publish(topic, sample(100))
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        records = consumer.poll(max_records=1, timeout=5.0)
        time.sleep(0.5)  # records of every partition fetched
        while len(records) < 100:
            batch = consumer.poll(max_records=1, timeout=1.0)
            assert len(batch) <= 1
            records.extend(batch)
    assert sorted(r.value for r in records) == sorted(v for _, v in sample(100))
