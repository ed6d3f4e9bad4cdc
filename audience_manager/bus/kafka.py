"""The Kafka event log: the bus port on an Apache Kafka cluster, through confluent-kafka.

Topics. A topic is created on first use (publish, offsets or a consumer) with the bus's
``partitions`` and ``replication``; an existing topic is used as it is if its partition
count matches, and refused with ``BusError`` otherwise, since a different count would
move keys to other partitions.

Durability. The producer is idempotent with ``acks=all``: the partition leader
acknowledges a batch only once every in-sync replica has it, and retries never write a
record twice or out of order. ``publish`` returns only after every record of the call
is acknowledged, so a returned ``(partition, offset)`` survives the loss of any broker
as long as the topic's ``min.insync.replicas`` (a broker or topic setting) is at least
2 with ``replication`` at least 3. Unlike the embedded log, a call is not all-or-nothing:
if ``publish`` raises ``BusUnavailable``, records of the call that reached the broker
before the failure stay visible, and records still on their way may arrive later
(Kafka transactions would be needed to prevent that). A failed call retried by its
caller therefore delivers some records at least once.

Outages. While no broker of the cluster can be reached, ``publish`` fails within about a
second instead of waiting for the acknowledgement timeout: a call under way gives up
soon after the client reports every broker down, and later calls first check that a
broker answers again. A producer that can deliver nothing any more (a fatal error, or
fenced: a restarted broker may refuse the new epoch an idempotent producer takes after
a delivery timed out) is replaced by a new one at the next call.

Placement. Every record is sent to ``partition_for(key)`` explicitly, so placement never
depends on the client's partitioner (it agrees with Kafka's default murmur2 anyway).

Consumers (``_kafka_consumer.py``). ``assign`` assigns partitions manually, starting at
the group's committed position, else the first retained offset; ``commit`` stores
positions in the group synchronously. A consumer may instead ``subscribe`` and let the
group coordinator share the topic's partitions among the group's members (Kafka only).
Records a consumer has fetched are handed out by ``poll`` partition by partition in
turn, so no partition starves another. A position outside the retained range (deleted by
retention, or past the end of a recreated topic) raises ``OffsetOutOfRange``; a broker
that cannot be reached raises ``BusUnavailable``.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import (
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from audience_manager.bus._kafka_consumer import UNREACHABLE_WAIT, KafkaConsumer, unavailable
from audience_manager.bus.base import (
    BusError,
    BusUnavailable,
    EventBus,
    check_name,
    check_values,
    encode_records,
)
from audience_manager.bus.partitioning import partitions_for_keys

__all__ = ["ConfigValue", "KafkaConsumer", "KafkaEventBus"]

ConfigValue = str | int | float | bool

_log = logging.getLogger(__name__)
_DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
# Delivery errors after which a producer delivers nothing any more: it takes a new one.
_PRODUCER_ENDED = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError._FENCED,
        KafkaError._FATAL,
    }
)
_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]


class KafkaEventBus(EventBus):
    """An event bus on the Kafka cluster at ``bootstrap`` (``host:port[,host:port]``).

    ``replication`` is the replication factor of the topics it creates (``None``: the
    broker's ``default.replication.factor``). ``client_config`` is librdkafka
    configuration for every client (security, timeouts); ``producer_config`` and
    ``consumer_config`` add to it for one kind. The settings that durability and the
    port's semantics rest on (idempotence, ``acks``, manual commits, the group id)
    cannot be overridden. ``timeout`` bounds, in seconds, each request to the cluster, how
    long a record may wait for its acknowledgement, and (as the default group
    ``session.timeout.ms``) how long a commit waits for the group coordinator.
    """

    shares_partitions = True

    def __init__(
        self,
        bootstrap: str,
        partitions: int = 8,
        replication: int | None = 1,
        *,
        client_config: Mapping[str, ConfigValue] | None = None,
        producer_config: Mapping[str, ConfigValue] | None = None,
        consumer_config: Mapping[str, ConfigValue] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not 1 <= partitions <= 10_000:
            raise ValueError(f"partitions must be between 1 and 10000, not {partitions}")
        if replication is not None and replication < 1:
            raise ValueError(f"replication must be at least 1, not {replication}")
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.replication = replication
        self.timeout = timeout
        common: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "logger": _log,
            # Reconnect within a second of a broker's return (librdkafka waits up to 10 s).
            "reconnect.backoff.max.ms": 1000,
            **(client_config or {}),
        }
        # The group session also bounds how long a commit waits for the coordinator; 6 s
        # is the shortest session Kafka brokers accept by default.
        self._consumer_config = {
            "session.timeout.ms": max(6000, int(timeout * 1000)),
            **common,
            **(consumer_config or {}),
        }
        producer = {
            "linger.ms": 5,
            "compression.type": "lz4",
            **common,
            **(producer_config or {}),
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": int(timeout * 1000),
            "error_cb": self._on_producer_error,
        }
        self._max_record_bytes = int(producer.get("message.max.bytes", _DEFAULT_MAX_MESSAGE_BYTES))
        self._producer_config = producer
        admin: dict[str, Any] = {**common, "error_cb": self._on_admin_error}
        try:
            self._admin = AdminClient(admin)
            self._producer = Producer(producer)
        except KafkaException as exc:
            raise BusError(f"invalid Kafka client configuration: {exc}") from exc
        # A second producer for publish_many, made on first use: it reports failed
        # deliveries only, so records that arrive cost no Python call each.
        self._bulk: Producer | None = None
        self._bulk_lock = threading.Lock()
        self._bulk_failures: list[KafkaError] = []
        self._unreachable: str | None = None  # why no broker answers, until one does
        self._admin_unreachable: str | None = None  # the same, as the admin client saw it
        self._ended: KafkaError | None = None  # what ended the producer, if something did
        self._lock = threading.Lock()
        self._topics: set[str] = set()  # topics known to exist with the right partitions
        self._consumers: weakref.WeakSet[KafkaConsumer] = weakref.WeakSet()
        self._closed = False

    def __repr__(self) -> str:
        return f"KafkaEventBus({self.bootstrap!r}, partitions={self.partitions})"

    def publish(self, topic: str, records: Sequence[tuple[str, bytes]]) -> list[tuple[int, int]]:
        """Send records; return each one's ``(partition, offset)`` once all are acknowledged."""
        check_name("topic", topic)
        if not records:
            return []
        keys, values = encode_records(records)
        if max(map(operator.add, map(len, keys), map(len, values))) > self._max_record_bytes:
            limit = self._max_record_bytes
            raise ValueError(f"a record's key and value must total at most {limit} bytes")
        self._ensure_topic(topic)
        chosen: list[int] = partitions_for_keys(keys, self.partitions).tolist()
        # Kafka reports deliveries of one partition in the order they were produced.
        delivered: list[list[int]] = [[] for _ in range(self.partitions)]
        failures: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is None:
                delivered[message.partition() or 0].append(message.offset() or 0)
            else:
                failures.append(error)

        def reported() -> bool:
            return sum(map(len, delivered)) + len(failures) == len(chosen)

        producer = self._working_producer(topic)
        produce, poll = producer.produce, producer.poll
        try:
            for key, value, partition in zip(keys, values, chosen, strict=True):
                while True:
                    try:
                        produce(topic, value, key, partition, on_delivery)
                        break
                    except BufferError:  # the client's queue is full: let it drain
                        poll(0.01)
            self._await_deliveries(producer, reported)
        except KafkaException as exc:
            raise unavailable(f"cannot publish to {topic}", exc) from exc
        if failures:
            ended = [f for f in failures if f.fatal() or f.code() in _PRODUCER_ENDED]
            if ended:
                self._ended = ended[0]
            raise BusUnavailable(f"cannot publish to {topic}: {failures[0].str()}")
        if sum(map(len, delivered)) < len(chosen):
            reason = self._unreachable or "no acknowledgement in time"
            raise BusUnavailable(f"cannot publish to {topic}: {reason}")
        self._unreachable = None
        offsets = [iter(found) for found in delivered]
        return [(partition, next(offsets[partition])) for partition in chosen]

    def publish_many(self, topic: str, keys: Sequence[str], values: Sequence[bytes]) -> None:
        """Send records; return once all are acknowledged, without their offsets.

        Placement is the same as ``publish``'s: the client's ``murmur2_random`` partitioner
        is Kafka's default one for every non-null key."""
        check_name("topic", topic)
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        if not keys:
            return
        if set(map(type, keys)) != {str}:
            raise TypeError("record keys must be str")
        check_values(values)
        # A UTF-8 character takes at most 4 bytes: count exactly only when that could matter.
        if 4 * max(map(len, keys)) + max(map(len, values)) > self._max_record_bytes:
            encoded = [key.encode() for key in keys]
            if max(map(operator.add, map(len, encoded), map(len, values))) > self._max_record_bytes:
                limit = self._max_record_bytes
                raise ValueError(f"a record's key and value must total at most {limit} bytes")
        self._ensure_topic(topic)
        self._working_producer(topic)  # fails at once while no broker answers
        with self._bulk_lock:
            producer = self._bulk_producer()
            failures = self._bulk_failures
            failures.clear()
            produce, poll = producer.produce, producer.poll
            try:
                for key, value in zip(keys, values, strict=True):
                    try:
                        produce(topic, value, key)
                    except BufferError:  # the client's queue is full: let it drain
                        while True:
                            poll(0.01)
                            try:
                                produce(topic, value, key)
                                break
                            except BufferError:
                                continue
                left = producer.flush(self.timeout + 5)
            except KafkaException as exc:
                self._drop_bulk()
                raise unavailable(f"cannot publish to {topic}", exc) from exc
            if failures or left:
                # The next call starts on a new producer (this one may be fenced or stuck).
                self._drop_bulk()
                reason = failures[0].str() if failures else "no acknowledgement in time"
                raise BusUnavailable(f"cannot publish to {topic}: {reason}")

    def _drop_bulk(self) -> None:
        if self._bulk is not None:
            self._bulk.purge()
            self._bulk.poll(0)
            self._bulk = None

    def _bulk_producer(self) -> Producer:
        if self._bulk is None:
            failures = self._bulk_failures
            self._bulk = Producer(
                {
                    **self._producer_config,
                    "partitioner": "murmur2_random",
                    "delivery.report.only.error": True,
                    "on_delivery": lambda error, _message: failures.append(error),
                }
            )
        return self._bulk

    def _working_producer(self, topic: str) -> Producer:
        """The producer, a new one if an error ended the last; ``BusUnavailable`` at once
        while no broker has answered since the client reported them all down."""
        with self._lock:
            if self._ended is not None:
                _log.warning("replacing the Kafka producer, ended by: %s", self._ended.str())
                ended, self._ended = self._producer, None
                self._producer = Producer(self._producer_config)
                ended.purge()  # its records fail now, rather than at a broker's return
                ended.poll(0)
            producer = self._producer
        if self._unreachable is not None:
            try:
                producer.list_topics(topic, timeout=UNREACHABLE_WAIT)
            except KafkaException as exc:
                raise unavailable(f"cannot publish to {topic}", exc) from exc
            self._unreachable = None
        return producer

    def _await_deliveries(self, producer: Producer, reported: Callable[[], bool]) -> None:
        """Wait until every record of a call is reported, the time for acknowledgements is
        up, or the client has reported every broker down for a while."""
        deadline = time.monotonic() + self.timeout + 5
        while not reported() and time.monotonic() < deadline:
            producer.flush(0.05)
            if self._unreachable is not None:
                deadline = min(deadline, time.monotonic() + UNREACHABLE_WAIT)

    def _on_admin_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._admin_unreachable = error.str()

    def _admin_result(self, future: Future[Any]) -> Any:
        """The result of an admin request; a ``KafkaException`` also when it did not
        finish in time, or a second after the client reported every broker down while no
        broker answers (one that cannot be reached, or whose TLS handshake fails, never
        will)."""
        deadline = time.monotonic() + self.timeout + 5
        down_since: float | None = None
        while True:
            try:
                result = future.result(0.05)
            except TimeoutError:
                pass
            else:
                self._admin_unreachable = None
                return result
            self._admin.poll(0)  # serves error_cb
            now = time.monotonic()
            if self._admin_unreachable is not None and down_since is None:
                down_since = now
            if down_since is not None and now - down_since > UNREACHABLE_WAIT:
                if not self._admin_reachable():
                    raise KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))
                down_since = None  # a stale report: the brokers answer again
            if now > deadline:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    def _admin_reachable(self) -> bool:
        try:
            self._admin.list_topics(timeout=UNREACHABLE_WAIT)
        except KafkaException:
            return False
        self._admin_unreachable = None
        return True

    def _on_producer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._unreachable = error.str()
        if error.fatal():
            self._ended = error

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The high watermark of each partition: the offset its next record will get."""
        return self._list_offsets(topic, _LATEST)

    def beginning_offsets(self, topic: str) -> dict[int, int]:
        """The low watermark of each partition: the first offset it retains."""
        return self._list_offsets(topic, _EARLIEST)

    def consumer(self, topic: str, group: str) -> KafkaConsumer:
        """A new consumer of ``topic`` for ``group``; ``assign`` or ``subscribe`` it."""
        self._ensure_topic(topic)
        consumer = KafkaConsumer(self, topic, group, self._consumer_config)
        self._consumers.add(consumer)
        return consumer

    def close(self) -> None:
        """Close every consumer made by this bus and wait for unsent records."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for consumer in list(self._consumers):
            consumer.close()
        self._producer.flush(self.timeout)
        if self._bulk is not None:
            self._bulk.flush(self.timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")

    def _ensure_topic(self, topic: str) -> None:
        """Create ``topic`` unless it exists; check the partition count of an existing one."""
        check_name("topic", topic)
        self._check_open()
        if topic in self._topics:
            return
        with self._lock:
            if topic in self._topics:
                return
            spec = NewTopic(topic, self.partitions, self.replication or -1)
            futures = self._admin.create_topics([spec], request_timeout=self.timeout)
            try:
                self._admin_result(futures[topic])
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise unavailable(f"cannot create topic {topic}", exc) from exc
            self._check_partitions(topic)
            self._topics.add(topic)

    def _check_partitions(self, topic: str) -> None:
        try:
            metadata = self._admin.list_topics(topic, timeout=self.timeout).topics[topic]
        except KafkaException as exc:
            raise unavailable(f"cannot describe topic {topic}", exc) from exc
        if metadata.error is not None:
            raise BusUnavailable(f"cannot describe topic {topic}: {metadata.error.str()}")
        if len(metadata.partitions) != self.partitions:
            raise BusError(
                f"topic {topic} has {len(metadata.partitions)} partitions in Kafka but the bus "
                f"is configured for {self.partitions}; keys would land on other partitions"
            )

    def _list_offsets(self, topic: str, spec: OffsetSpec) -> dict[int, int]:
        self._ensure_topic(topic)
        wanted = {TopicPartition(topic, p): spec for p in range(self.partitions)}
        try:
            futures = self._admin.list_offsets(wanted, request_timeout=self.timeout)
            return {tp.partition: self._admin_result(f).offset for tp, f in futures.items()}
        except KafkaException as exc:
            raise unavailable(f"cannot list the offsets of {topic}", exc) from exc
