"""The embedded event log: Kafka-like partitioned topics in plain files, no server.

Layout under ``directory``::

    <topic>/.writer.lock                  held (flock) by the one process writing the topic
    <topic>/.ends                         published end offset of every partition
    <topic>/<partition>/<base:020d>.seg   segments, named by their first offset
    <topic>/.groups/<group>.json          committed positions of a consumer group

The record framing is described in ``_segments``.

Durability. ``publish`` appends its records, then (with ``fsync=True``, the default)
fsyncs every partition file it touched, and only then publishes the new ends and
returns. So an acknowledged record survives ``kill -9`` of any process and a power
loss. Consumers read only up to the published ends: they never see a record that is
not yet durable, and a call that fails (I/O error, full disk) is truncated away before
anyone can read it, so each call is all-or-nothing. A writer crash mid-call is undone on
reopening (the page cache still holds the published ends); after a power loss the
reopened log keeps every complete fsynced frame, so an unacknowledged call interrupted
by it may survive in part. After a failed fsync the bus refuses to publish (the kernel
may have dropped the unwritten pages) until it is reopened, which recovers the log.
Threads publishing concurrently share fsyncs (group commit).
With ``fsync=False`` nothing is flushed: records still survive a crash of any process
(the kernel has them), but not a power loss.

Processes. One process at a time writes a topic: it takes an exclusive ``flock`` on the
topic's ``.writer.lock`` at its first write, and a second writer gets ``BusError`` (so
ingestion can write ``events`` while the processor writes ``dead-letter``). Any number of
processes may read while it writes. Opening a topic for writing recovers it: a torn tail
(a crash mid-write) is cut off and offsets continue after the last complete record.

Retention. When a segment rolls over (``segment_bytes``), segments last written more
than ``retention_ms`` ago are deleted, oldest first, but only while every consumer
group that has committed a position is past their last record; a topic no group has
committed to keeps everything. ``delete_expired_segments`` applies the same rule on
demand.
"""

from __future__ import annotations

import fcntl
import operator
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audience_manager.bus._consumer import EmbeddedConsumer, beginning_offset, read_topic_ends
from audience_manager.bus._groups import group_floor
from audience_manager.bus._writer import TopicWriter
from audience_manager.bus.base import (
    BusError,
    BusUnavailable,
    EventBus,
    check_name,
    encode_records,
)
from audience_manager.bus.partitioning import partitions_for_keys

__all__ = [
    "DEFAULT_RETENTION_MS",
    "DEFAULT_SEGMENT_BYTES",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "EmbeddedConsumer",
    "EmbeddedEventBus",
]

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
MAX_KEY_BYTES = 0xFFFF
MAX_VALUE_BYTES = 16 << 20
_LOCK_NAME = ".writer.lock"


def _validate(records: Sequence[tuple[str, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """Encoded keys and the values of ``records``, once their types and sizes are checked."""
    keys, values = encode_records(records)
    if max(map(len, keys)) > MAX_KEY_BYTES:
        raise ValueError(f"record keys must be at most {MAX_KEY_BYTES} bytes in UTF-8")
    if max(map(len, values)) > MAX_VALUE_BYTES:
        raise ValueError(f"record values must be at most {MAX_VALUE_BYTES} bytes")
    return keys, values


class EmbeddedEventBus(EventBus):
    """An event bus kept in ``directory``; see the module for layout and guarantees."""

    def __init__(
        self,
        directory: Path | str,
        partitions: int = 8,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        retention_ms: int | None = DEFAULT_RETENTION_MS,
    ) -> None:
        if not 1 <= partitions <= 10_000:
            raise ValueError(f"partitions must be between 1 and 10000, not {partitions}")
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        self.directory = Path(directory)
        self.partitions = partitions
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.retention_ms = retention_ms
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BusUnavailable(f"cannot create {self.directory}: {exc}") from exc
        self._lock = threading.Lock()
        self._lock_fds: dict[str, int] = {}  # topic -> fd holding its writer flock
        self._writers: dict[str, TopicWriter] = {}
        self._consumers: weakref.WeakSet[EmbeddedConsumer] = weakref.WeakSet()
        self._closed = False

    def __repr__(self) -> str:
        return f"EmbeddedEventBus({str(self.directory)!r}, partitions={self.partitions})"

    def publish(self, topic: str, records: Sequence[tuple[str, bytes]]) -> list[tuple[int, int]]:
        """Append records durably; return each one's ``(partition, offset)`` in order."""
        check_name("topic", topic)
        if not records:
            return []
        keys, values = _validate(records)
        chosen = partitions_for_keys(keys, self.partitions)
        # Group records by partition, keeping their order within each.
        order = np.argsort(chosen, kind="stable")
        counts = np.bincount(chosen, minlength=self.partitions)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        grouped_keys: Sequence[bytes] = keys
        grouped_values = values
        if len(keys) > 1:  # one C call per list reorders it (itemgetter of one is no tuple)
            take = operator.itemgetter(*order.tolist())
            grouped_keys, grouped_values = take(keys), take(values)
        batches = {
            partition: (
                grouped_keys[start : start + count],
                grouped_values[start : start + count],
            )
            for partition, (start, count) in enumerate(
                zip(starts.tolist(), counts.tolist(), strict=True)
            )
            if count
        }
        writer = self._writer(topic)
        sequence, first = writer.append(batches, time.time_ns() // 1_000_000)
        writer.sync(sequence)
        firsts = np.zeros(self.partitions, dtype=np.int64)
        firsts[list(first)] = list(first.values())
        grouped = chosen[order]
        offsets = np.empty(len(keys), dtype=np.int64)
        offsets[order] = firsts[grouped] + np.arange(len(keys)) - starts[grouped]
        if writer.take_rolled():
            self._delete_expired(topic, writer)
        return list(zip(chosen.tolist(), offsets.tolist(), strict=True))

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The offset the next record of each partition will get."""
        topic_dir = self._topic_dir(topic)
        self._check_open()
        try:
            return dict(enumerate(read_topic_ends(topic_dir, self.partitions)))
        except OSError as exc:
            raise BusUnavailable(f"cannot read the ends of {topic}: {exc}") from exc

    def beginning_offsets(self, topic: str) -> dict[int, int]:
        """The first offset each partition retains."""
        topic_dir = self._topic_dir(topic)
        self._check_open()
        try:
            return {p: beginning_offset(topic_dir / str(p)) for p in range(self.partitions)}
        except OSError as exc:
            raise BusUnavailable(f"cannot list the segments of {topic}: {exc}") from exc

    def consumer(self, topic: str, group: str) -> EmbeddedConsumer:
        """A new consumer of ``topic`` for ``group``; call ``assign`` before polling."""
        self._check_open()
        consumer = EmbeddedConsumer(
            self._topic_dir(topic), group, self.partitions, fsync=self.fsync
        )
        self._consumers.add(consumer)
        return consumer

    def delete_expired_segments(self, topic: str) -> int:
        """Apply retention to ``topic`` now; return how many segments were deleted."""
        return self._delete_expired(topic, self._writer(topic))

    def close(self) -> None:
        """Close every consumer made by this bus, the topic files and the writer lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for consumer in list(self._consumers):
                consumer.close()
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
            for fd in self._lock_fds.values():
                os.close(fd)  # releases the flock
            self._lock_fds.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")

    def _topic_dir(self, topic: str) -> Path:
        return self.directory / check_name("topic", topic)

    def _writer(self, topic: str) -> TopicWriter:
        writer = self._writers.get(topic)
        if writer is not None:
            return writer
        with self._lock:
            self._check_open()
            writer = self._writers.get(topic)
            if writer is None:
                try:
                    self._take_writer_lock(topic)
                    writer = TopicWriter(
                        self._topic_dir(topic),
                        self.partitions,
                        fsync=self.fsync,
                        segment_bytes=self.segment_bytes,
                    )
                except OSError as exc:
                    raise BusUnavailable(f"cannot open {topic} for writing: {exc}") from exc
                self._writers[topic] = writer
            return writer

    def _take_writer_lock(self, topic: str) -> None:
        if topic in self._lock_fds:
            return
        directory = self._topic_dir(topic)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BusError(
                f"{topic} in {self.directory} already has a writer (pid {holder}); only one "
                "process may publish to a topic of an embedded log at a time"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fds[topic] = fd

    def _delete_expired(self, topic: str, writer: TopicWriter) -> int:
        if self.retention_ms is None:
            return 0
        try:
            floor = group_floor(self._topic_dir(topic))
            if floor is None:
                return 0
            older_than = time.time_ns() // 1_000_000 - self.retention_ms
            return writer.delete_segments(floor, older_than)
        except OSError as exc:
            raise BusUnavailable(f"cannot apply retention to {topic}: {exc}") from exc
