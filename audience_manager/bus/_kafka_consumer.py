"""The Kafka consumer of the event-log port (``KafkaEventBus.consumer`` makes them)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from audience_manager.bus.base import (
    AssignCallback,
    BusError,
    BusUnavailable,
    Consumer,
    OffsetOutOfRange,
    Record,
    RevokeCallback,
    check_commit,
    check_name,
    check_partitions,
    check_seek,
)

if TYPE_CHECKING:
    from audience_manager.bus.kafka import KafkaEventBus

__all__ = ["UNREACHABLE_WAIT", "KafkaConsumer", "unavailable"]

_log = logging.getLogger("audience_manager.bus.kafka")
_P = ParamSpec("_P")
_T = TypeVar("_T")
# Records a consumer takes from the client before handing them out fairly.
_PREFETCH = 10_000
# Consumer errors that mean the cluster cannot be used right now.
_FAILURES = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION})
_OUT_OF_RANGE = frozenset({KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET})
#: Seconds a client waits for a broker once every broker was reported down (and at most for
#: an answer when checking that one is back).
UNREACHABLE_WAIT = 1.0


def unavailable(what: str, exc: KafkaException) -> BusUnavailable:
    """The port's error for a client failure."""
    return BusUnavailable(f"{what}: {exc.args[0] if exc.args else exc}")


class KafkaConsumer(Consumer):
    """A consumer of one Kafka topic for one group; one thread at a time.

    Positions are tracked here, record by record handed out, so they are exact even
    before the client has fetched anything; records fetched but not yet handed out wait
    in per-partition buffers.
    """

    def __init__(
        self, bus: KafkaEventBus, topic: str, group: str, config: Mapping[str, Any]
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._partitions = bus.partitions
        self._failure: KafkaError | None = None
        try:
            self._consumer = RawConsumer(
                {
                    **config,
                    "group.id": check_name("group", group),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "error",
                    "partition.assignment.strategy": "cooperative-sticky",
                    "error_cb": self._on_error,
                }
            )
        except KafkaException as exc:
            raise BusError(f"invalid Kafka consumer configuration: {exc}") from exc
        self._positions: dict[int, int] = {}
        self._buffers: dict[int, list[Record]] = {}
        self._subscribed = False
        self._on_assign: AssignCallback | None = None
        self._on_revoke: RevokeCallback | None = None
        self._turn = 0
        self._closed = False

    def assign(self, partitions: Sequence[int] | None = None) -> None:
        """Read exactly ``partitions`` (``None``: all), from the committed position or start."""
        self._check_open()
        if self._subscribed:
            raise BusError("a subscribed consumer's partitions are assigned by its group")
        wanted = list(range(self._partitions)) if partitions is None else list(partitions)
        check_partitions(self._topic, wanted, self._partitions)
        starts = self._starts([p for p in wanted if p not in self._positions])
        positions = {p: self._positions.get(p, starts.get(p, 0)) for p in wanted}
        self._run(self._consumer.assign, self._tps(positions))
        self._positions = positions
        self._buffers = {}

    def subscribe(
        self,
        on_assign: AssignCallback | None = None,
        on_revoke: RevokeCallback | None = None,
    ) -> None:
        """Join the group; see :meth:`Consumer.subscribe`. The group uses the
        cooperative-sticky assignor, so members keep their other partitions through a
        rebalance; partitions lost without notice (a commit for those fails) are revoked
        too."""
        self._check_open()
        if self._positions:
            raise BusError("a consumer with assigned partitions cannot subscribe")
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._run(
            self._consumer.subscribe,
            [self._topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
        )
        self._subscribed = True

    def seek(self, positions: Mapping[int, int]) -> None:
        """Set the next offset to read of assigned partitions."""
        self._check_open()
        check_seek(self._topic, positions, self._positions)
        for partition, position in positions.items():
            self._run(self._consumer.seek, TopicPartition(self._topic, partition, position))
            self._positions[partition] = position
            self._buffers.pop(partition, None)

    def poll(self, max_records: int = 10_000, timeout: float = 0.1) -> list[Record]:
        """Up to ``max_records`` new records; ``[]`` if none arrive within ``timeout`` s."""
        self._check_open()
        if not self._positions and not self._subscribed:
            raise BusError("assign partitions before polling")
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        room = max(max_records, _PREFETCH) - sum(map(len, self._buffers.values()))
        if room > 0:
            messages = self._run(self._consumer.consume, room, 0)
            if not messages and not any(self._buffers.values()):
                messages = self._run(self._consumer.consume, 1, timeout)
                if messages and room > 1:
                    messages += self._run(self._consumer.consume, room - 1, 0)
            self._take(messages)
        return self._hand_out(max_records)

    def positions(self) -> dict[int, int]:
        """The next offset to read of every assigned partition."""
        self._check_open()
        return dict(self._positions)

    def commit(self, positions: Mapping[int, int] | None = None) -> None:
        """Store positions for the group (``None``: the current positions), synchronously."""
        self._check_open()
        chosen = self.positions() if positions is None else dict(positions)
        check_commit(self._topic, chosen, self._partitions)
        if not chosen:
            return
        stored = self._run(self._consumer.commit, offsets=self._tps(chosen), asynchronous=False)
        for tp in stored:
            if tp.error is not None:
                raise BusUnavailable(f"cannot commit {self._topic}/{tp.partition}: {tp.error}")

    def committed(self) -> dict[int, int]:
        """The group's stored position of every partition that has one."""
        self._check_open()
        return self._committed(list(range(self._partitions)))

    def close(self) -> None:
        """Leave the group (if subscribed) and close the client."""
        if self._closed:
            return
        try:
            self._consumer.close()  # a subscribed consumer's on_revoke may still commit
        except KafkaException as exc:
            _log.warning("closing the Kafka consumer of %s failed: %s", self._topic, exc)
        finally:
            self._closed = True
            self._positions, self._buffers = {}, {}

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the consumer is closed")

    def _tps(self, positions: Mapping[int, int]) -> list[TopicPartition]:
        return [TopicPartition(self._topic, p, o) for p, o in positions.items()]

    def _run(self, call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call the client, translating its errors; raise a failure its callback reported."""
        try:
            result = call(*args, **kwargs)
        except KafkaException as exc:
            raise unavailable(f"Kafka consumer of {self._topic} failed", exc) from exc
        failure, self._failure = self._failure, None
        if failure is not None and not self._reachable_again(failure):
            raise BusUnavailable(f"Kafka consumer of {self._topic} failed: {failure.str()}")
        return result

    def _reachable_again(self, failure: KafkaError) -> bool:
        """Whether a broker answers again after ``failure`` reported them all down: the
        report may come late, from the first tries of a consumer made while they were."""
        if failure.code() != KafkaError._ALL_BROKERS_DOWN:
            return False
        try:
            self._consumer.list_topics(self._topic, timeout=UNREACHABLE_WAIT)
        except KafkaException:
            return False
        return True

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in _FAILURES:
            self._failure = error

    def _committed(self, partitions: list[int]) -> dict[int, int]:
        wanted = [TopicPartition(self._topic, p) for p in partitions]
        found = self._run(self._consumer.committed, wanted, timeout=self._bus.timeout)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    def _starts(self, partitions: list[int]) -> dict[int, int]:
        """Where newly assigned partitions start: committed position, else the beginning."""
        if not partitions:
            return {}
        starts = self._committed(partitions)
        if len(starts) < len(partitions):
            beginnings = self._bus.beginning_offsets(self._topic)
            starts = {p: starts.get(p, beginnings[p]) for p in partitions}
        return starts

    def _assigned(self, consumer: RawConsumer, gained: list[TopicPartition]) -> None:
        partitions = sorted(tp.partition for tp in gained)
        chosen = self._on_assign(partitions) if self._on_assign is not None else None
        starts = self._starts([p for p in partitions if chosen is None or p not in chosen])
        starts.update(chosen or {})
        consumer.incremental_assign(self._tps(starts))
        self._positions.update(starts)

    def _revoked(self, consumer: RawConsumer, lost: list[TopicPartition]) -> None:
        partitions = sorted(tp.partition for tp in lost)
        if self._on_revoke is not None:
            self._on_revoke(partitions)
        consumer.incremental_unassign(lost)
        for partition in partitions:
            self._positions.pop(partition, None)
            self._buffers.pop(partition, None)

    def _take(self, messages: list[Message]) -> None:
        """Buffer fetched records; raise the first error among them after keeping the rest."""
        failure: BusError | None = None
        errors = [(m, error) for m in messages if (error := m.error()) is not None]
        for message, error in errors:
            if error.code() in _OUT_OF_RANGE:
                failure = failure or OffsetOutOfRange(
                    f"{self._topic}/{message.partition() or 0}: position outside the "
                    f"retained offsets ({error.str()})"
                )
            elif error.code() != KafkaError._PARTITION_EOF:
                failure = failure or BusUnavailable(f"cannot read {self._topic}: {error.str()}")
        if errors:
            messages = [m for m in messages if m.error() is None]
        topic = self._topic
        # A fetch hands over runs of one partition's messages.
        for at, run in itertools.groupby(messages, key=Message.partition):
            partition = at or 0
            if partition not in self._positions:
                continue  # revoked or unassigned meanwhile
            self._buffers.setdefault(partition, []).extend(
                [
                    Record(
                        topic,
                        partition,
                        m.offset() or 0,
                        key.decode() if (key := m.key()) is not None else "",
                        m.value() or b"",
                        m.timestamp()[1],
                    )
                    for m in run
                ]
            )
        if failure is not None:
            raise failure

    def _hand_out(self, max_records: int) -> list[Record]:
        """Up to ``max_records`` buffered records, partitions sharing fairly in turn."""
        ready = [p for p, buffer in self._buffers.items() if buffer]
        if not ready:
            return []
        self._turn = (self._turn + 1) % len(ready)
        ready = ready[self._turn :] + ready[: self._turn]
        records: list[Record] = []
        for index, partition in enumerate(ready):
            share = -(-(max_records - len(records)) // (len(ready) - index))
            if share == 0:
                break  # the budget is spent; the next poll starts further along
            buffer = self._buffers[partition]
            taken = buffer[:share]
            del buffer[:share]
            records.extend(taken)
            self._positions[partition] = taken[-1].offset + 1
        return records
