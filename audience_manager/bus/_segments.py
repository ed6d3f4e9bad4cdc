"""On-disk format of the embedded log: record frames, segment files and the ends file.

A partition is a directory of segment files named by the offset of their first record
(``00000000000000000042.seg``). A segment is a run of frames, all integers little-endian::

    u32 length   bytes after the crc field: 18 + key length + value length
    u32 crc32    of those bytes
    u64 offset   sequential within the partition
    u64 timestamp  append time, ms
    u16 key length, key (UTF-8), value

The topic's ``.ends`` file holds the end offset of every partition up to which records are
complete and durable (fsynced, when the bus fsyncs). Readers never read past it, so they
never see a record that a crash or a failed write could still take back. It has two
slots written alternately, each ``u64 sequence, 16-byte boot id, u32 partitions,
u64 end * partitions, u32 crc32``, so one slot is always whole. The boot id tells the
next writer whether the page cache (and so this file) survived since it was written.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

from audience_manager.bus.base import BusError, Record

__all__ = [
    "FRAME_HEADER",
    "SEGMENT_SUFFIX",
    "EndsFile",
    "Frames",
    "boot_id",
    "decode_frames",
    "encode_frames",
    "list_segments",
    "read_ends",
    "scan_segment",
    "segment_path",
]

#: length, crc, offset, timestamp, key length.
FRAME_HEADER = struct.Struct("<IIQQH")
SEGMENT_SUFFIX = ".seg"
_PREFIX = struct.Struct("<II")
_BODY = struct.Struct("<QQH")
_BODY_MIN = _BODY.size
_SLOT_HEAD = struct.Struct("<Q16sI")
_CRC = struct.Struct("<I")
_SCAN_CHUNK = 4 << 20


def encode_frames(
    keys: Sequence[bytes], values: Sequence[bytes], first_offset: int, timestamp: int
) -> bytes:
    """Frames of the records ``(keys[i], values[i])`` numbered from ``first_offset``."""
    parts: list[bytes] = []
    extend = parts.extend
    crc32, pack_body, pack_prefix = zlib.crc32, _BODY.pack, _PREFIX.pack
    offsets = range(first_offset, first_offset + len(keys))
    for offset, key, value in zip(offsets, keys, values, strict=True):
        body = b"".join((pack_body(offset, timestamp, len(key)), key, value))
        extend((pack_prefix(len(body), crc32(body)), body))
    return b"".join(parts)


class Frames:
    """What ``decode_frames`` found: records, bytes consumed, and why it stopped."""

    __slots__ = ("consumed", "records", "wanted")

    def __init__(self, records: list[Record], consumed: int, wanted: int) -> None:
        self.records = records
        self.consumed = consumed
        #: Bytes the next frame needs from ``consumed`` on when it is cut off, else 0.
        self.wanted = wanted


def decode_frames(
    buffer: bytes,
    topic: str,
    partition: int,
    offset: int,
    stop_offset: int,
    limit: int,
) -> Frames:
    """Decode frames from the start of ``buffer``, the first being ``offset``.

    Stops before ``stop_offset``, after ``limit`` records, or at an incomplete frame.
    Raises ``BusError`` for a complete frame that fails its checksum or numbering.
    """
    records: list[Record] = []
    append = records.append
    unpack, crc32 = FRAME_HEADER.unpack_from, zlib.crc32
    header, body_min = FRAME_HEADER.size, _BODY_MIN
    view = memoryview(buffer)
    size = len(buffer)
    position = 0
    last = min(stop_offset, offset + limit)
    while offset < last:
        if position + header > size:
            return Frames(records, position, header)
        length, crc, number, timestamp, key_length = unpack(buffer, position)
        stop = position + 8 + length
        if stop > size:
            return Frames(records, position, 8 + length)
        key_end = position + header + key_length
        if crc32(view[position + 8 : stop]) != crc or number != offset or length < body_min:
            raise BusError(f"corrupt record at {topic}/{partition} offset {offset}")
        append(
            Record(
                topic,
                partition,
                number,
                buffer[position + header : key_end].decode(),
                buffer[key_end:stop],
                timestamp,
            )
        )
        position = stop
        offset += 1
    return Frames(records, position, 0)


def scan_segment(fd: int, base: int, stop_offset: int | None = None) -> tuple[int, int]:
    """Byte position and offset after the last valid frame of a segment.

    Reads from the segment start; stops early at the frame numbered ``stop_offset``. A
    frame that is cut off, or fails its checksum or numbering, ends the scan: from there
    on the file is a torn tail.
    """
    file_size = os.fstat(fd).st_size
    position, offset, chunk = 0, base, _SCAN_CHUNK
    while True:
        buffer = os.pread(fd, chunk, position)
        view = memoryview(buffer)
        index, wanted = 0, 0
        while stop_offset is None or offset < stop_offset:
            if index + 8 > len(buffer):
                wanted = 8
                break
            length, crc = _PREFIX.unpack_from(buffer, index)
            stop = index + 8 + length
            if length < _BODY_MIN or position + stop > file_size:
                return position + index, offset
            if stop > len(buffer):
                wanted = 8 + length
                break
            number = _BODY.unpack_from(buffer, index + 8)[0]
            if zlib.crc32(view[index + 8 : stop]) != crc or number != offset:
                return position + index, offset
            index = stop
            offset += 1
        else:
            return position + index, offset
        if len(buffer) < chunk:
            return position + index, offset  # end of file
        position += index
        chunk = max(_SCAN_CHUNK, wanted)


def segment_path(partition_dir: Path, base: int) -> Path:
    """The file of the segment whose first offset is ``base``."""
    return partition_dir / f"{base:020d}{SEGMENT_SUFFIX}"


def list_segments(partition_dir: Path) -> list[int]:
    """Base offsets of a partition's segments, ascending (empty if it has none yet)."""
    try:
        names = os.listdir(partition_dir)
    except FileNotFoundError:
        return []
    return sorted(
        int(name[: -len(SEGMENT_SUFFIX)])
        for name in names
        if name.endswith(SEGMENT_SUFFIX) and name[: -len(SEGMENT_SUFFIX)].isdigit()
    )


def boot_id() -> bytes:
    """This boot of the machine's 16-byte id, or zeros where the OS does not tell."""
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return uuid.UUID(text).bytes
    except (OSError, ValueError):
        return bytes(16)


def _slot_size(partitions: int) -> int:
    return _SLOT_HEAD.size + 8 * partitions + _CRC.size


def _parse_slot(data: bytes, partitions: int) -> tuple[int, bytes, list[int]] | None:
    """``(sequence, boot id, ends)`` of a whole slot, ``None`` if torn or never written."""
    if len(data) < _SLOT_HEAD.size + _CRC.size:
        return None
    sequence, boot, count = _SLOT_HEAD.unpack_from(data)
    size = _slot_size(count)
    if sequence == 0 or size > len(data):
        return None
    if _CRC.unpack_from(data, size - _CRC.size)[0] != zlib.crc32(data[: size - _CRC.size]):
        return None
    if count != partitions:
        raise BusError(f"the topic has {count} partitions, the bus was opened with {partitions}")
    return sequence, boot, list(struct.unpack_from(f"<{count}Q", data, _SLOT_HEAD.size))


def read_ends(fd: int, partitions: int) -> tuple[int, bytes, list[int]] | None:
    """The newest whole slot of an open ends file: ``(sequence, boot id, ends)``.

    The first write fills the second slot, so once written the file is exactly two slots
    long, whatever partition count it was written with.
    """
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    half = len(data) // 2
    slots = [_parse_slot(data[:half], partitions), _parse_slot(data[half:], partitions)]
    found = [slot for slot in slots if slot is not None]
    return max(found, key=lambda slot: slot[0]) if found else None


class EndsFile:
    """The writer's handle on a topic's ``.ends`` file."""

    def __init__(self, path: Path, partitions: int) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._partitions = partitions
        self._boot = boot_id()
        current = read_ends(self._fd, partitions)
        self._sequence = current[0] if current else 0
        #: What the file said when opened: ``(boot id, ends)``, or ``None`` if empty.
        self.previous = (current[1], current[2]) if current else None

    @property
    def same_boot(self) -> bool:
        """Whether the file was last written during this boot (a known one)."""
        return self.previous is not None and self._boot == self.previous[0] != bytes(16)

    def write(self, ends: Sequence[int]) -> None:
        """Publish new ends (overwriting the older slot); not fsynced, see the module."""
        self._sequence += 1
        body = _SLOT_HEAD.pack(self._sequence, self._boot, self._partitions)
        body += struct.pack(f"<{self._partitions}Q", *ends)
        data = body + _CRC.pack(zlib.crc32(body))
        slot = self._sequence % 2
        if os.pwrite(self._fd, data, slot * len(data)) != len(data):
            raise OSError("short write to the ends file")

    def fsync(self) -> None:
        """Flush the file to the device."""
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)
