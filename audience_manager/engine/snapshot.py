"""Engine snapshots: the whole state on disk, with the log positions it includes.

A snapshot is written to a temporary file, fsynced and renamed into place, so a crash
leaves either the previous snapshot or the new one, never a torn file. Restoring a
snapshot and replaying the log from its positions rebuilds the engine exactly.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audience_manager.engine.engine import Engine

__all__ = ["Snapshot", "latest_snapshot", "load_snapshot", "save_snapshot"]

_SUFFIX = ".snapshot"
_KEEP = 2  # the newest snapshots kept; older ones are deleted


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A restored engine and the log positions (next offset per partition) it includes."""

    engine: Engine
    positions: dict[int, int]
    meta: dict[str, Any]


def save_snapshot(
    directory: Path,
    engine: Engine,
    positions: Mapping[int, int],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a snapshot atomically; returns its path. Older snapshots beyond two go."""
    directory.mkdir(parents=True, exist_ok=True)
    sequence = sum(positions.values())
    path = directory / f"{sequence:020d}-{engine.now:015d}{_SUFFIX}"
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        state = {"engine": engine, "positions": dict(positions), "meta": dict(meta or {})}
        pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_directory(directory)
    for old in sorted(directory.glob("*" + _SUFFIX))[:-_KEEP]:
        old.unlink(missing_ok=True)
    return path


def latest_snapshot(directory: Path) -> Path | None:
    """The newest complete snapshot in ``directory``, if any."""
    snapshots = sorted(directory.glob("*" + _SUFFIX)) if directory.exists() else []
    return snapshots[-1] if snapshots else None


def load_snapshot(path: Path, clock: Callable[[], int]) -> Snapshot:
    """Restore the engine of a snapshot, driven by ``clock`` from now on."""
    with path.open("rb") as handle:
        state = pickle.load(handle)  # our own file, written by save_snapshot
    engine: Engine = state["engine"]
    engine.clock = clock
    return Snapshot(engine, {int(k): int(v) for k, v in state["positions"].items()}, state["meta"])


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
