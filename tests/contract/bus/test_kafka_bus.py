"""What the Kafka backend adds to the contract: topic creation, agreement with Kafka's own
partitioner, broker failures, and group-managed subscription."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from services.kafka import GROUP_CONFIG, KafkaBroker, free_port, running_tansu
from services.s3 import running_s3

from audience_manager.bus import BusError, BusUnavailable, OffsetOutOfRange, Record
from audience_manager.bus.kafka import KafkaConsumer, KafkaEventBus

PARTITIONS = 4


@pytest.fixture
def bus(kafka_broker: KafkaBroker) -> Iterator[KafkaEventBus]:
    with KafkaEventBus(kafka_broker.bootstrap, partitions=PARTITIONS, timeout=10) as built:
        yield built


@pytest.fixture
def admin(kafka_broker: KafkaBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_broker.bootstrap})


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def keep_polling(consumer: KafkaConsumer, seconds: float) -> None:
    """Poll for ``seconds`` (for the errors that polling raises)."""
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        consumer.poll(timeout=0.2)


def test_a_topic_is_created_with_the_bus_partitions_and_replication(
    bus: KafkaEventBus, admin: AdminClient, topic: str
) -> None:
    bus.publish(topic, [("user-1", b"x")])
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    assert sorted(partitions) == list(range(PARTITIONS))
    assert {len(partition.replicas) for partition in partitions.values()} == {1}


def test_an_existing_topic_is_used_when_its_partitions_match(
    bus: KafkaEventBus, admin: AdminClient, topic: str
) -> None:
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(10)
    assert bus.publish(topic, [("user-1", b"x")]) == [(bus.partition_for("user-1"), 0)]


def test_an_existing_topic_with_other_partitions_is_refused(
    bus: KafkaEventBus, admin: AdminClient, topic: str
) -> None:
    admin.create_topics([NewTopic(topic, PARTITIONS - 1, 1)])[topic].result(10)
    with pytest.raises(BusError, match=f"has {PARTITIONS - 1} partitions.*configured for 4"):
        bus.publish(topic, [("user-1", b"x")])
    with pytest.raises(BusError, match="partitions"):
        bus.consumer(topic, "g")


@pytest.mark.parametrize("partitions", [4, 7])
def test_kafkas_default_partitioner_agrees_with_partition_for(
    kafka_broker: KafkaBroker, admin: AdminClient, topic: str, partitions: int
) -> None:
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)
    keys = ["", "é", "x" * 300, *(f"user-{i}" for i in range(300))]
    placed: dict[str, int] = {}

    def on_delivery(error: object, message: object) -> None:
        assert error is None
        placed[message.key().decode()] = message.partition()  # type: ignore[attr-defined]

    # Java's default partitioner, as librdkafka names it: murmur2 of the key bytes.
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "partitioner": "murmur2"})
    for key in keys:
        producer.produce(topic, b"v", key.encode(), on_delivery=on_delivery)
    assert producer.flush(10) == 0
    with KafkaEventBus(kafka_broker.bootstrap, partitions=partitions) as bus:
        assert placed == {key: bus.partition_for(key) for key in keys}
        assert len(set(placed.values())) == partitions


def test_a_record_too_large_for_kafka_is_refused_before_anything_is_sent(
    bus: KafkaEventBus, topic: str
) -> None:
    records = [("user-1", b"small"), ("user-2", bytes(1_000_001))]
    with pytest.raises(ValueError, match="at most 1000000 bytes"):
        bus.publish(topic, records)
    with pytest.raises(ValueError, match="at most 1000000 bytes"):
        bus.publish_many(topic, [k for k, _ in records], [v for _, v in records])
    with bus.consumer(topic, "g") as consumer:
        consumer.assign()
        assert consumer.poll(timeout=1.0) == []


def test_a_position_past_the_end_is_out_of_range(
    kafka_broker: KafkaBroker, bus: KafkaEventBus, topic: str
) -> None:
    if not kafka_broker.reports_out_of_range:
        pytest.skip("the broker answers a fetch past the end with nothing (tansu)")
    [(partition, _)] = bus.publish(topic, [("user-1", b"x")])
    with bus.consumer(topic, "g") as consumer:
        consumer.assign([partition])
        consumer.seek({partition: 5})
        with pytest.raises(OffsetOutOfRange):
            keep_polling(consumer, 10)


def test_an_unreachable_broker_is_unavailable() -> None:
    with KafkaEventBus(f"127.0.0.1:{free_port()}", partitions=1, timeout=1) as bus:
        with pytest.raises(BusUnavailable, match="cannot create topic"):
            bus.publish("events", [("user-1", b"x")])
        with pytest.raises(BusUnavailable):
            bus.end_offsets("events")


def test_a_broker_that_goes_away_fails_publish_and_poll(topic: str) -> None:
    with running_tansu() as broker, KafkaEventBus(broker.bootstrap, 2, timeout=2) as bus:
        bus.publish(topic, [("user-1", b"x")])
        consumer = bus.consumer(topic, "g")
        consumer.assign()
        assert len(consumer.poll(timeout=5.0)) == 1
        broker.stop()
        with pytest.raises(BusUnavailable, match="cannot publish"):
            bus.publish(topic, [("user-1", b"y")])
        with pytest.raises(BusUnavailable, match="cannot publish"):
            bus.publish_many(topic, ["user-1"], [b"z"])
        with pytest.raises(BusUnavailable):
            keep_polling(consumer, 10)


@pytest.fixture
def restartable() -> Iterator[KafkaBroker]:
    """A broker of the test's own keeping its data in an S3 bucket: killed and started
    again, it still has everything it acknowledged."""
    with running_s3() as bucket, running_tansu(bucket) as broker:
        yield broker


def publish_until_acknowledged(bus: KafkaEventBus, topic: str, seconds: float) -> bytes:
    """Publish a new value every attempt until one is acknowledged; return that value."""
    give_up = time.monotonic() + seconds
    for attempt in range(1_000):
        value = b"after-%d" % attempt
        try:
            bus.publish(topic, [("user-1", value)])
        except BusUnavailable:
            assert time.monotonic() < give_up, "publishing does not resume"
            time.sleep(0.2)
            continue
        return value
    raise AssertionError("publishing does not resume")


def values_in(bus: KafkaEventBus, topic: str) -> list[bytes]:
    """Every value of ``topic``, once the restarted broker tells where its partitions start."""
    give_up = time.monotonic() + 15
    while True:
        try:
            with bus.consumer(topic, f"read-{uuid.uuid4().hex[:8]}") as consumer:
                consumer.assign()
                values: list[bytes] = []
                while records := consumer.poll(timeout=2.0):
                    values += [r.value for r in records]
                return values
        except BusUnavailable:
            assert time.monotonic() < give_up, "the restarted broker cannot be read"
            time.sleep(0.2)


def test_publish_fails_fast_while_no_broker_answers_and_resumes_after(
    restartable: KafkaBroker, topic: str
) -> None:
    with KafkaEventBus(restartable.bootstrap, 2) as bus:  # acknowledgements may take 30 s
        bus.publish(topic, [("user-1", b"before")])
        with restartable.down():
            for value in (b"refused-1", b"refused-2"):
                started = time.monotonic()
                with pytest.raises(BusUnavailable, match="cannot publish"):
                    bus.publish(topic, [("user-1", value)])
                assert time.monotonic() - started < 3
        after = publish_until_acknowledged(bus, topic, 15)
        values = values_in(bus, topic)
    assert values.count(b"before") == values.count(after) == 1
    # A refused record may still arrive once the broker is back (at least once), not twice.
    assert values.count(b"refused-1") <= 1
    assert values.count(b"refused-2") <= 1


def test_a_consumer_reads_on_once_the_broker_is_back(restartable: KafkaBroker, topic: str) -> None:
    # The client reports every broker down while the broker is away; polled only after its
    # return, the consumer must not fail on that late report.
    with KafkaEventBus(restartable.bootstrap, 2) as bus:
        bus.publish(topic, [("user-1", b"before")])
        with bus.consumer(topic, "g") as consumer:
            consumer.assign()
            assert [r.value for r in consumer.poll(timeout=5.0)] == [b"before"]
            with restartable.down():
                time.sleep(1.0)
            after = publish_until_acknowledged(bus, topic, 15)
            give_up = time.monotonic() + 10
            read: list[bytes] = []
            while after not in read and time.monotonic() < give_up:
                read += [r.value for r in consumer.poll(timeout=1.0)]
            # Refused tries may have reached the log too; nothing else is new.
            assert after in read
            assert all(value.startswith(b"after-") for value in read)


def test_a_producer_that_can_deliver_nothing_more_is_replaced(
    restartable: KafkaBroker, topic: str
) -> None:
    # A delivery that times out while the broker is away makes the idempotent producer take
    # a new epoch, which the restarted broker refuses: the producer is fenced for good, and
    # only a new one delivers again.
    with KafkaEventBus(restartable.bootstrap, 2, timeout=0.8) as bus:
        bus.publish(topic, [("user-1", b"before")])
        with restartable.down():
            with pytest.raises(BusUnavailable, match="cannot publish"):
                bus.publish(topic, [("user-1", b"timed-out")])
            time.sleep(1.5)
        after = publish_until_acknowledged(bus, topic, 15)
        assert bus.publish(topic, [("user-1", b"next")]) != []
        values = values_in(bus, topic)
    assert [v for v in values if v != b"timed-out"] == [b"before", after, b"next"]


def test_subscribed_consumers_share_the_partitions_and_hand_them_over(
    kafka_broker: KafkaBroker, topic: str
) -> None:
    with KafkaEventBus(
        kafka_broker.bootstrap, partitions=PARTITIONS, consumer_config=GROUP_CONFIG
    ) as bus:
        acks = bus.publish(topic, [(f"user-{i}", str(i).encode()) for i in range(200)])
        events: list[tuple[str, str, list[int]]] = []
        records: dict[str, list[Record]] = {"a": [], "b": []}
        first, second = bus.consumer(topic, "group"), bus.consumer(topic, "group")

        def watch(name: str, consumer: KafkaConsumer) -> None:
            def revoked(partitions: list[int]) -> None:
                events.append((name, "revoke", partitions))
                consumer.commit({p: consumer.positions()[p] for p in partitions})

            consumer.subscribe(
                on_assign=lambda partitions: events.append((name, "assign", partitions)),
                on_revoke=revoked,
            )

        watch("a", first)
        watch("b", second)

        def owned(name: str) -> set[int]:
            held: set[int] = set()
            for who, what, partitions in events:
                if who == name:
                    held = held | set(partitions) if what == "assign" else held - set(partitions)
            return held

        def read(name: str, consumer: KafkaConsumer) -> None:
            records[name].extend(consumer.poll(timeout=0.2))

        give_up = time.monotonic() + 40
        while not (owned("a") and owned("b") and len(records["a"]) + len(records["b"]) == 200):
            assert time.monotonic() < give_up, f"no fair split: {events}"
            read("a", first)
            read("b", second)
        assert owned("a") | owned("b") == set(range(PARTITIONS))
        assert not owned("a") & owned("b")
        got = sorted((r.partition, r.offset) for r in records["a"] + records["b"])
        assert got == sorted(acks)

        # ``a`` leaves: ``b`` takes its partitions over from where ``a`` committed.
        first.close()
        more = bus.publish(topic, [(f"user-{i}", b"later") for i in range(40)])
        records["b"].clear()
        give_up = time.monotonic() + 40
        while owned("b") != set(range(PARTITIONS)) or len(records["b"]) < len(more):
            assert time.monotonic() < give_up, f"no hand-over: {events}"
            read("b", second)
        assert sorted((r.partition, r.offset) for r in records["b"]) == sorted(more)
        second.close()


def test_assign_and_subscribe_do_not_mix(bus: KafkaEventBus, topic: str) -> None:
    with bus.consumer(topic, "g") as assigned:
        assigned.assign([0])
        with pytest.raises(BusError, match="cannot subscribe"):
            assigned.subscribe()
    with bus.consumer(topic, "g") as subscribed:
        subscribed.subscribe()
        with pytest.raises(BusError, match="assigned by its group"):
            subscribed.assign([0])
