"""Reading the embedded log: a consumer that follows segment files as they grow.

A consumer never reads past the ends the writer published in the topic's ``.ends``
file, so every record it returns is complete and durable; it still checks each frame's
length and checksum, and treats a cut-off frame as not yet written.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from audience_manager.bus._groups import read_group, write_group
from audience_manager.bus._segments import (
    decode_frames,
    list_segments,
    read_ends,
    scan_segment,
    segment_path,
)
from audience_manager.bus.base import (
    BusError,
    BusUnavailable,
    Consumer,
    OffsetOutOfRange,
    Record,
    check_commit,
    check_name,
    check_partitions,
    check_seek,
)

__all__ = ["EmbeddedConsumer", "beginning_offset", "read_topic_ends"]

# How long an idle poll sleeps between looks at the ends file.
_IDLE_WAIT = 0.001
_MIN_READ = 64 << 10
_MAX_READ = 16 << 20


def beginning_offset(partition_dir: Path) -> int:
    """The first offset a partition retains (0 before anything was written)."""
    bases = list_segments(partition_dir)
    return bases[0] if bases else 0


def read_topic_ends(topic_dir: Path, partitions: int) -> list[int]:
    """The published end offset of every partition (zeros for a topic not yet written)."""
    try:
        fd = os.open(topic_dir / ".ends", os.O_RDONLY)
    except FileNotFoundError:
        return [0] * partitions
    try:
        found = read_ends(fd, partitions)
    finally:
        os.close(fd)
    return found[2] if found is not None else [0] * partitions


class _Cursor:
    """Where a consumer is in one partition: next offset, and its frame in a segment."""

    __slots__ = ("byte", "fd", "partition", "position")

    def __init__(self, partition: int, position: int) -> None:
        self.partition = partition
        self.position = position
        self.fd: int | None = None  # segment holding ``position``, once located
        self.byte = 0  # where frame ``position`` starts in that segment

    def move(self, position: int) -> None:
        self.release()
        self.position = position

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class EmbeddedConsumer(Consumer):
    """A consumer of one topic of an embedded log directory; one thread at a time."""

    def __init__(self, topic_dir: Path, group: str, partitions: int, *, fsync: bool) -> None:
        self._topic_dir = topic_dir
        self._topic = topic_dir.name
        self._group = check_name("group", group)
        self._partitions = partitions
        self._fsync = fsync
        self._cursors: dict[int, _Cursor] = {}
        self._ends_fd: int | None = None
        self._turn = 0  # rotates which partition is read first
        self._frame_bytes = 256  # running estimate, to size reads
        self._closed = False

    def assign(self, partitions: Sequence[int] | None = None) -> None:
        """Read exactly ``partitions`` (``None``: all), from the committed position or start."""
        self._check_open()
        wanted = range(self._partitions) if partitions is None else partitions
        check_partitions(self._topic, wanted, self._partitions)
        committed = self.committed()
        cursors: dict[int, _Cursor] = {}
        for partition in wanted:
            cursor = self._cursors.pop(partition, None)
            if cursor is None:
                start = committed.get(partition)
                if start is None:
                    start = beginning_offset(self._topic_dir / str(partition))
                cursor = _Cursor(partition, start)
            cursors[partition] = cursor
        for cursor in self._cursors.values():
            cursor.release()
        self._cursors = cursors

    def seek(self, positions: Mapping[int, int]) -> None:
        """Set the next offset to read of assigned partitions."""
        self._check_open()
        check_seek(self._topic, positions, self._cursors)
        for partition, position in positions.items():
            self._cursors[partition].move(position)

    def poll(self, max_records: int = 10_000, timeout: float = 0.1) -> list[Record]:
        """Up to ``max_records`` new records; ``[]`` if none arrive within ``timeout`` s."""
        self._check_open()
        if not self._cursors:
            raise BusError("assign partitions before polling")
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        deadline = time.monotonic() + timeout
        while True:
            try:
                records = self._read(max_records)
            except OSError as exc:
                raise BusUnavailable(f"cannot read {self._topic_dir}: {exc}") from exc
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            time.sleep(min(_IDLE_WAIT, remaining))

    def positions(self) -> dict[int, int]:
        """The next offset to read of every assigned partition."""
        self._check_open()
        return {partition: cursor.position for partition, cursor in self._cursors.items()}

    def commit(self, positions: Mapping[int, int] | None = None) -> None:
        """Store positions for the group (``None``: the current positions)."""
        self._check_open()
        chosen = self.positions() if positions is None else dict(positions)
        check_commit(self._topic, chosen, self._partitions)
        try:
            write_group(self._topic_dir, self._group, chosen, fsync=self._fsync)
        except OSError as exc:
            raise BusUnavailable(f"cannot store positions of {self._group}: {exc}") from exc

    def committed(self) -> dict[int, int]:
        """The group's stored position of every partition that has one."""
        self._check_open()
        try:
            stored = read_group(self._topic_dir, self._group)
        except OSError as exc:
            raise BusUnavailable(f"cannot read positions of {self._group}: {exc}") from exc
        return {p: o for p, o in stored.items() if 0 <= p < self._partitions}

    def close(self) -> None:
        """Close the consumer's files."""
        if self._closed:
            return
        self._closed = True
        for cursor in self._cursors.values():
            cursor.release()
        self._cursors = {}
        if self._ends_fd is not None:
            os.close(self._ends_fd)
            self._ends_fd = None

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the consumer is closed")

    def _ends(self) -> list[int] | None:
        if self._ends_fd is None:
            try:
                self._ends_fd = os.open(self._topic_dir / ".ends", os.O_RDONLY)
            except FileNotFoundError:
                return None  # nothing written yet
        found = read_ends(self._ends_fd, self._partitions)
        return found[2] if found is not None else None

    def _read(self, max_records: int) -> list[Record]:
        ends = self._ends()
        if ends is None:
            return []
        cursors = list(self._cursors.values())
        self._turn = (self._turn + 1) % len(cursors)
        ready = [
            c
            for c in cursors[self._turn :] + cursors[: self._turn]
            if c.position < ends[c.partition]
        ]
        # Locate every segment first: a position lost to retention must raise before
        # any record is taken from another partition.
        ready = [cursor for cursor in ready if cursor.fd is not None or self._locate(cursor)]
        records: list[Record] = []
        for index, cursor in enumerate(ready):
            budget = max_records - len(records)
            share = -(-budget // (len(ready) - index))
            records.extend(self._read_partition(cursor, ends[cursor.partition], share))
        return records

    def _locate(self, cursor: _Cursor) -> bool:
        """Open the segment holding ``cursor.position``; ``False`` if it is not there yet."""
        directory = self._topic_dir / str(cursor.partition)
        bases = list_segments(directory)
        if not bases:
            return False
        if cursor.position < bases[0]:
            raise OffsetOutOfRange(
                f"{self._topic}/{cursor.partition}: offset {cursor.position} was deleted; "
                f"the first retained offset is {bases[0]}"
            )
        base = bases[bisect.bisect_right(bases, cursor.position) - 1]
        try:
            fd = os.open(segment_path(directory, base), os.O_RDONLY)
        except FileNotFoundError:
            return False  # deleted meanwhile; the next poll sees the new beginning
        byte, offset = scan_segment(fd, base, cursor.position)
        if offset < cursor.position:
            os.close(fd)
            return False
        cursor.fd, cursor.byte = fd, byte
        return True

    def _read_partition(self, cursor: _Cursor, end: int, limit: int) -> list[Record]:
        records: list[Record] = []
        size = 0
        while len(records) < limit and cursor.position < end and cursor.fd is not None:
            wanted = limit - len(records)
            size = max(size, min(_MAX_READ, max(_MIN_READ, wanted * self._frame_bytes)))
            buffer = os.pread(cursor.fd, size, cursor.byte)
            frames = decode_frames(
                buffer, self._topic, cursor.partition, cursor.position, end, wanted
            )
            if frames.records:
                count = len(frames.records)
                records.extend(frames.records)
                cursor.byte += frames.consumed
                cursor.position += count
                self._frame_bytes = max(32, frames.consumed // count)
                size = 0
            elif len(buffer) == size and frames.wanted > size:
                # One frame larger than the read; never trust a length past the file end.
                larger = min(frames.wanted, os.fstat(cursor.fd).st_size - cursor.byte)
                if larger <= size:
                    break
                size = larger
            elif not buffer:
                self._next_segment(cursor)  # this segment is complete
            else:
                break  # a cut-off frame: not written yet
        return records

    def _next_segment(self, cursor: _Cursor) -> None:
        directory = self._topic_dir / str(cursor.partition)
        try:
            fd = os.open(segment_path(directory, cursor.position), os.O_RDONLY)
        except FileNotFoundError:
            cursor.release()  # not rolled over yet; locate again on the next poll
            return
        cursor.release()
        cursor.fd, cursor.byte = fd, 0
