"""The event-log port: a partitioned, append-only, durable log of keyed records.

Modelled on Kafka. A topic has a fixed number of partitions; a record's key chooses its
partition (Kafka's default murmur2 partitioner, so every backend agrees), and within a
partition records get sequential offsets 0, 1, 2, ... A consumer reads partitions from
positions it controls and may store them for its group in the bus for monitoring.

Exceptions::

    BusError                  anything the bus refuses or cannot do
    ├── BusUnavailable        the storage or broker failed (I/O error, broker down)
    └── OffsetOutOfRange      a position points below the first retained offset

Backends translate their driver's errors at the boundary
(``raise BusUnavailable(...) from exc``); arguments of the wrong type or size are
``TypeError`` / ``ValueError`` as usual.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Self

import msgspec

from audience_manager.bus.partitioning import partition_for_key

__all__ = [
    "AssignCallback",
    "BusError",
    "BusUnavailable",
    "Consumer",
    "EventBus",
    "OffsetOutOfRange",
    "Record",
    "RevokeCallback",
    "check_commit",
    "check_name",
    "check_partitions",
    "check_seek",
    "check_values",
    "encode_records",
]

# Kafka's legal topic characters; a leading dot is refused so names never clash with the
# bus's own hidden files.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,248}")


class BusError(Exception):
    """The bus refused an operation or could not perform it."""


class BusUnavailable(BusError):
    """The storage or broker behind the bus failed; retrying later may succeed."""


class OffsetOutOfRange(BusError):
    """A consumer position is below the first offset the partition still retains."""


class Record(msgspec.Struct, frozen=True, gc=False):
    """One record read from the log."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    #: Append time in milliseconds since the epoch.
    timestamp: int


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a legal topic or group name, else raise ``ValueError``."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-249 characters of A-Z a-z 0-9 . _ -, "
            "not starting with a dot"
        )
    return name


def encode_records(records: Sequence[tuple[str, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """The UTF-8 keys and the values of ``records``; ``TypeError`` unless str keys, bytes values."""
    try:
        keys = [key.encode() for key, _ in records]
    except AttributeError:
        raise TypeError("record keys must be str") from None
    values = [value for _, value in records]
    check_values(values)
    return keys, values


def check_values(values: Sequence[object]) -> None:
    """``TypeError`` unless every record value is bytes."""
    if any(not issubclass(kind, bytes) for kind in set(map(type, values))):
        raise TypeError("record values must be bytes")


def check_partitions(topic: str, partitions: Iterable[int], count: int) -> None:
    """Refuse a partition that ``topic`` (of ``count`` partitions) does not have."""
    for partition in partitions:
        if not isinstance(partition, int) or not 0 <= partition < count:
            raise BusError(f"{topic} has no partition {partition!r}")


def check_commit(topic: str, positions: Mapping[int, int], count: int) -> None:
    """Refuse a commit to a partition ``topic`` does not have or of a negative position."""
    check_partitions(topic, positions, count)
    for position in positions.values():
        if position < 0:
            raise ValueError(f"negative position {position}")


def check_seek(topic: str, positions: Mapping[int, int], assigned: Collection[int]) -> None:
    """Refuse a seek to a partition not assigned or to a negative position."""
    for partition, position in positions.items():
        if partition not in assigned:
            raise BusError(f"partition {partition} of {topic} is not assigned")
        if position < 0:
            raise ValueError(f"negative position {position}")


#: Called with partitions a group member gains; may return the positions to start them at.
AssignCallback = Callable[[list[int]], Mapping[int, int] | None]
#: Called with partitions a group member is about to lose (or has lost).
RevokeCallback = Callable[[list[int]], None]


class Consumer(ABC):
    """Reads assigned partitions of one topic on behalf of a consumer group.

    A consumer is used by one thread at a time. Positions are "next offset to read".
    """

    @abstractmethod
    def assign(self, partitions: Sequence[int] | None = None) -> None:
        """Read exactly ``partitions`` (``None``: all of the topic's partitions).

        A newly assigned partition starts at the group's committed position, else at the
        first retained offset; a partition that stays assigned keeps its position.
        """

    def subscribe(
        self,
        on_assign: AssignCallback | None = None,
        on_revoke: RevokeCallback | None = None,
    ) -> None:
        """Join the consumer group and read the partitions it assigns to this member, which
        change as members come and go (only where :attr:`EventBus.shares_partitions`).

        Assignments arrive during ``poll``: ``on_assign`` is called with the partitions
        gained and may return where to start them (else: the group's committed position,
        else the first retained offset); ``on_revoke`` with those about to be taken away,
        while ``commit`` still works for them.
        """
        raise BusError(f"{type(self).__name__} has no consumer groups: assign partitions")

    @abstractmethod
    def seek(self, positions: Mapping[int, int]) -> None:
        """Set the next offset to read for some assigned partitions."""

    @abstractmethod
    def poll(self, max_records: int = 10_000, timeout: float = 0.1) -> list[Record]:
        """Return up to ``max_records`` new records, waiting up to ``timeout`` seconds.

        Records of one partition come in offset order; partitions share the budget fairly.
        Returns as soon as something is available, or ``[]`` once ``timeout`` has passed.
        """

    @abstractmethod
    def positions(self) -> dict[int, int]:
        """The next offset to read of every assigned partition."""

    @abstractmethod
    def commit(self, positions: Mapping[int, int] | None = None) -> None:
        """Store positions for this consumer's group (``None``: the current positions)."""

    @abstractmethod
    def committed(self) -> dict[int, int]:
        """The group's stored position of every partition that has one."""

    @abstractmethod
    def close(self) -> None:
        """Release the consumer's resources; it cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class EventBus(ABC):
    """A set of topics, each with ``partitions`` partitions, fixed when it is created."""

    partitions: int
    #: True when consumers of one group in several processes share the partitions
    #: (``Consumer.subscribe``); otherwise one consumer reads them all.
    shares_partitions: bool = False

    def partition_for(self, key: str) -> int:
        """The partition of ``key``: Kafka's murmur2 of its UTF-8 bytes."""
        return partition_for_key(key, self.partitions)

    @abstractmethod
    def publish(self, topic: str, records: Sequence[tuple[str, bytes]]) -> list[tuple[int, int]]:
        """Append ``(key, value)`` records; return each one's ``(partition, offset)``.

        Returns only once every record is durable; raises without making any of them
        visible to consumers if it cannot.
        """

    def publish_many(self, topic: str, keys: Sequence[str], values: Sequence[bytes]) -> None:
        """Append the records ``(keys[i], values[i])`` as :meth:`publish` does, without
        returning their positions: once it returns, every record is durable; if it raises,
        the same holds as for a failed ``publish``. Backends that can send records more
        cheaply when nobody needs their offsets do so here."""
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        self.publish(topic, list(zip(keys, values, strict=True)))

    @abstractmethod
    def end_offsets(self, topic: str) -> dict[int, int]:
        """The offset the next record of each partition will get."""

    @abstractmethod
    def beginning_offsets(self, topic: str) -> dict[int, int]:
        """The first offset each partition still retains."""

    @abstractmethod
    def consumer(self, topic: str, group: str) -> Consumer:
        """A new consumer of ``topic`` for ``group``, with nothing assigned yet."""

    @abstractmethod
    def close(self) -> None:
        """Release the bus and every consumer it made."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
