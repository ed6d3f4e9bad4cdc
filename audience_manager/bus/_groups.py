"""Consumer-group positions of the embedded log: ``<topic>/.groups/<group>.json``.

Each file maps partition to the group's next offset to read. Updates merge into the
file under an advisory lock (consumers of one group may live in several processes, each
with its own partitions) and replace it atomically: temporary file, fsync, rename.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from audience_manager.bus._writer import fsync_directory

__all__ = ["GROUPS_DIRECTORY", "group_floor", "read_group", "write_group"]

GROUPS_DIRECTORY = ".groups"
_SUFFIX = ".json"
_decoder = msgspec.json.Decoder(dict[int, int])


def _group_path(topic_dir: Path, group: str) -> Path:
    return topic_dir / GROUPS_DIRECTORY / f"{group}{_SUFFIX}"


def read_group(topic_dir: Path, group: str) -> dict[int, int]:
    """The stored positions of ``group`` (empty if it never committed)."""
    try:
        return _decoder.decode(_group_path(topic_dir, group).read_bytes())
    except FileNotFoundError:
        return {}


def write_group(topic_dir: Path, group: str, positions: Mapping[int, int], *, fsync: bool) -> None:
    """Merge ``positions`` into the stored positions of ``group``."""
    path = _group_path(topic_dir, group)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        merged = read_group(topic_dir, group)
        merged.update(positions)
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(msgspec.json.encode(dict(sorted(merged.items()))))
            file.flush()
            if fsync:
                os.fsync(file.fileno())
        os.replace(temporary, path)
        if fsync:
            fsync_directory(path.parent)
    finally:
        os.close(lock_fd)  # releases the lock


def group_floor(topic_dir: Path) -> dict[int, int] | None:
    """Per partition, the lowest position any group stored; ``None`` without groups.

    A partition some group has no position for is absent: nothing in it is consumed.
    """
    directory = topic_dir / GROUPS_DIRECTORY
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(_SUFFIX))
    except FileNotFoundError:
        return None
    if not names:
        return None
    groups = [read_group(topic_dir, name[: -len(_SUFFIX)]) for name in names]
    shared = set.intersection(*(set(group) for group in groups))
    return {partition: min(group[partition] for group in groups) for partition in shared}
