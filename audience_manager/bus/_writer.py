"""The single writer of one topic of the embedded log: recovery, appends, group commit.

Appends are serialised by one lock and each call's frames go out with one ``write`` per
partition. Making them durable is shared: a publisher that finds another one already
syncing waits for it, then syncs everything appended meanwhile in one round (one fsync
per touched partition file, run in parallel), so concurrent publishers share fsyncs.
Only after that round are the new ends written to the ``.ends`` file that readers obey.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from audience_manager.bus._segments import (
    EndsFile,
    encode_frames,
    list_segments,
    scan_segment,
    segment_path,
)
from audience_manager.bus.base import BusError, BusUnavailable

__all__ = ["TopicWriter", "fsync_directory"]

_APPEND = os.O_RDWR | os.O_APPEND


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (created, renamed, deleted files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _ends_at(directory: Path, base: int, next_base: int) -> bool:
    """Whether segment ``base`` holds every offset up to ``next_base`` (cutting any rest)."""
    fd = os.open(segment_path(directory, base), os.O_RDWR)
    try:
        size, end = scan_segment(fd, base)
        if end != next_base:
            return False
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
        return True
    finally:
        os.close(fd)


class _Partition:
    """Writer-side state of one partition: its active segment and what is not yet synced."""

    __slots__ = ("base", "directory", "dirty", "fd", "new_entry", "next_offset", "sealed", "size")

    def __init__(self, directory: Path, base: int, fd: int, size: int, next_offset: int) -> None:
        self.directory = directory
        self.base = base
        self.fd = fd
        self.size = size
        self.next_offset = next_offset
        self.dirty = False
        self.sealed: list[int] = []  # rolled-over segments, closed after their fsync
        self.new_entry = False  # a segment file was created or removed: fsync the directory


class TopicWriter:
    """Appends to the partitions of one topic; the caller holds the directory's writer lock.

    Opening recovers the topic: the tail each partition may have past its published end
    (a crash mid-publish) is cut off, so offsets continue right after the last record
    that was complete, and durable when the machine went down.
    """

    def __init__(self, topic_dir: Path, partitions: int, *, fsync: bool, segment_bytes: int):
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0  # appends made so far (a sequence number)
        self._durable = 0  # appends covered by the last published ends
        self._failure: str | None = None
        self._rolled = False
        self._pool: ThreadPoolExecutor | None = None
        self._ends: EndsFile | None = None
        self._parts: list[_Partition] = []
        try:
            self._recover(topic_dir, partitions)
        except BaseException:
            self.close()
            raise

    def _recover(self, topic_dir: Path, partitions: int) -> None:
        topic_dir.mkdir(parents=True, exist_ok=True)
        found = {name for name in os.listdir(topic_dir) if name.isdigit()}
        if found and found != {str(p) for p in range(partitions)}:
            raise BusError(
                f"{topic_dir} has {len(found)} partitions, the bus was opened with {partitions}"
            )
        self._ends = EndsFile(topic_dir / ".ends", partitions)
        # The published ends are exact when the page cache survived since they were written
        # (a process crash): cut what lies past them. After a reboot they may be older than
        # the fsynced data, so then keep every complete frame.
        previous = self._ends.previous
        trusted = previous[1] if previous is not None and self._ends.same_boot else None
        for partition in range(partitions):
            limit = trusted[partition] if trusted is not None else None
            self._parts.append(self._recover_partition(topic_dir / str(partition), limit))
        if self._fsync:
            for part in self._parts:
                os.fsync(part.fd)
                fsync_directory(part.directory)
            fsync_directory(topic_dir)
            fsync_directory(topic_dir.parent)
        self._ends.write([part.next_offset for part in self._parts])

    def _recover_partition(self, directory: Path, limit: int | None) -> _Partition:
        directory.mkdir(exist_ok=True)
        bases = list_segments(directory)
        if not bases:
            fd = os.open(segment_path(directory, 0), _APPEND | os.O_CREAT, 0o644)
            return _Partition(directory, 0, fd, 0, 0)
        if limit is not None and limit < bases[0]:
            limit = None  # cannot be: ends never fall behind retention
        while limit is not None and len(bases) > 1 and bases[-1] >= limit:
            os.unlink(segment_path(directory, bases.pop()))
        while limit is None and len(bases) > 1 and not _ends_at(directory, bases[-2], bases[-1]):
            # After a reboot the unsynced tail of a rolled-over segment may be lost while a
            # later segment survived: what follows the gap goes too.
            os.unlink(segment_path(directory, bases.pop()))
        base = bases[-1]
        fd = os.open(segment_path(directory, base), _APPEND)
        try:
            size, next_offset = scan_segment(fd, base, limit)
            if os.fstat(fd).st_size > size:
                os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return _Partition(directory, base, fd, size, next_offset)

    def append(
        self, batches: Mapping[int, tuple[Sequence[bytes], Sequence[bytes]]], timestamp: int
    ) -> tuple[int, dict[int, int]]:
        """Write the frames of ``batches`` (partition → keys, values) without syncing them.

        Returns the append's sequence number, for ``sync``, and the first offset given in
        each partition. On failure whatever this call wrote is truncated away again.
        """
        with self._append_lock:
            if self._failure is not None:
                raise BusUnavailable(self._failure)
            first: dict[int, int] = {}
            undo: list[tuple[_Partition, int, int]] = []
            try:
                for partition, (keys, values) in batches.items():
                    part = self._parts[partition]
                    if part.size >= self._segment_bytes and part.next_offset > part.base:
                        self._roll(part)
                    undo.append((part, part.size, part.next_offset))
                    data = encode_frames(keys, values, part.next_offset, timestamp)
                    _write_all(part.fd, data)
                    first[partition] = part.next_offset
                    part.size += len(data)
                    part.next_offset += len(keys)
                    part.dirty = True
            except OSError as exc:
                self._undo(undo)
                raise BusUnavailable(f"cannot append to the log: {exc}") from exc
            self._written += 1
            return self._written, first

    def _roll(self, part: _Partition) -> None:
        fd = os.open(segment_path(part.directory, part.next_offset), _APPEND | os.O_CREAT, 0o644)
        os.ftruncate(fd, 0)  # a leftover file of that name never held published records
        part.sealed.append(part.fd)
        part.fd, part.base, part.size = fd, part.next_offset, 0
        part.new_entry = True
        self._rolled = True

    def _undo(self, undo: list[tuple[_Partition, int, int]]) -> None:
        for part, size, next_offset in undo:
            try:
                os.ftruncate(part.fd, size)
            except OSError as exc:
                self._failure = f"the log could not be repaired after a failed write: {exc}"
                return
            part.size, part.next_offset = size, next_offset

    def sync(self, sequence: int) -> None:
        """Return once append ``sequence`` is durable and visible to readers."""
        with self._sync_lock:
            if self._durable >= sequence:
                return  # a concurrent round covered it
            with self._append_lock:
                if self._failure is not None:
                    raise BusUnavailable(self._failure)
                target = self._written
                ends = [part.next_offset for part in self._parts]
                fds: list[int] = []
                sealed: list[int] = []
                directories: list[Path] = []
                for part in self._parts:
                    if part.dirty:
                        fds.append(part.fd)
                        part.dirty = False
                    sealed.extend(part.sealed)
                    part.sealed = []
                    if part.new_entry:
                        directories.append(part.directory)
                        part.new_entry = False
            try:
                if self._fsync:
                    self._fsync_all([*sealed, *fds], directories)
                assert self._ends is not None
                self._ends.write(ends)
            except OSError as exc:
                # After a failed fsync the kernel may have dropped the dirty pages: nothing
                # written since the last round can be trusted until the log is reopened.
                self._failure = f"the log could not be made durable: {exc}"
                raise BusUnavailable(self._failure) from exc
            finally:
                for fd in sealed:
                    os.close(fd)
            self._durable = target

    def _fsync_all(self, fds: list[int], directories: list[Path]) -> None:
        if len(fds) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(min(8, len(self._parts)), "bus-fsync")
            # This thread syncs one file while the pool syncs the others: one thread fewer
            # to wake and wait for.
            others = [self._pool.submit(os.fsync, fd) for fd in fds[1:]]
            try:
                os.fsync(fds[0])
            finally:
                wait(others)  # all have ended before the caller closes any of the files
            for other in others:
                other.result()
        elif fds:
            os.fsync(fds[0])
        for directory in directories:
            fsync_directory(directory)

    def take_rolled(self) -> bool:
        """Whether a segment rolled over since the last call."""
        with self._append_lock:
            rolled, self._rolled = self._rolled, False
            return rolled

    def delete_segments(self, floor: Mapping[int, int], older_than_ms: int) -> int:
        """Delete leading segments last written before ``older_than_ms`` (epoch ms).

        A segment goes only if records follow it in a later segment and every one of its
        records is below ``floor[partition]``; the active segment always stays.
        """
        deleted = 0
        for partition, part in enumerate(self._parts):
            bases = list_segments(part.directory)
            removed = False
            for base, next_base in itertools.pairwise(bases):
                path = segment_path(part.directory, base)
                if next_base > floor.get(partition, 0):
                    break
                if path.stat().st_mtime_ns // 1_000_000 >= older_than_ms:
                    break
                path.unlink()
                deleted += 1
                removed = True
            if removed and self._fsync:
                fsync_directory(part.directory)
        return deleted

    def close(self) -> None:
        """Close every file; the writer cannot be used afterwards."""
        with self._sync_lock, self._append_lock:
            for part in self._parts:
                for fd in [part.fd, *part.sealed]:
                    os.close(fd)
                part.sealed = []
            self._parts = []
            if self._ends is not None:
                self._ends.close()
                self._ends = None
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            self._failure = "the log is closed"
