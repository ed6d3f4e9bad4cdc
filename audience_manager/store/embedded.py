"""The embedded state store: one SQLite database in WAL mode.

The processor is the only writer; any number of reader processes (the APIs) read the same
file concurrently and see whole commits only. Durability: WAL with ``synchronous=NORMAL``
survives a crash of any process; after a power loss the newest commits may be missing,
together with their positions, and are rebuilt by replaying the event log.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from pyroaring import BitMap

from audience_manager.store.base import (
    ChangeRecord,
    JournalEntry,
    StateCommit,
    StateStore,
    StoreUnavailable,
)

__all__ = ["EmbeddedStateStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS positions (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, positions TEXT NOT NULL, now INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS profiles (
    dense INTEGER PRIMARY KEY, user_id TEXT NOT NULL UNIQUE, doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    segment_id TEXT NOT NULL, dense INTEGER NOT NULL, PRIMARY KEY (segment_id, dense)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (dense, segment_id);
CREATE TABLE IF NOT EXISTS sizes (segment_id TEXT PRIMARY KEY, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, segment_id TEXT NOT NULL, user_id TEXT NOT NULL,
    dense INTEGER NOT NULL, change TEXT NOT NULL, at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, payload BLOB NOT NULL, created INTEGER NOT NULL,
    response BLOB
);
"""


class EmbeddedStateStore(StateStore):
    """State in ``directory/state.db``; one connection per thread."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "state.db"
        self._local = threading.local()
        try:
            self._connection().executescript(_SCHEMA)  # idempotent; runs its own transaction
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot create {self.path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"state store: {exc}") from exc

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._connection().execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"state store: {exc}") from exc

    # -- the processor ----------------------------------------------------------------

    def commit(self, commit: StateCommit) -> None:
        with self._transaction() as db:
            delta: dict[str, int] = {}
            erased = [(p.dense,) for p in commit.profiles if p.doc is None]
            for (erased_row,) in erased:
                for (segment_id,) in db.execute(
                    "SELECT segment_id FROM members WHERE dense = ?", (erased_row,)
                ).fetchall():
                    delta[segment_id] = delta.get(segment_id, 0) - 1
            if erased:
                db.executemany("DELETE FROM profiles WHERE dense = ?", erased)
                db.executemany("DELETE FROM members WHERE dense = ?", erased)
            db.executemany(
                "INSERT INTO profiles (dense, user_id, doc) VALUES (?, ?, ?) "
                "ON CONFLICT (dense) DO UPDATE SET doc = excluded.doc",
                [(p.dense, p.user_id, p.doc) for p in commit.profiles if p.doc is not None],
            )
            for segment_id in commit.dropped:
                db.execute("DELETE FROM members WHERE segment_id = ?", (segment_id,))
                db.execute("DELETE FROM sizes WHERE segment_id = ?", (segment_id,))
                delta.pop(segment_id, None)
            for segment_id, dense in commit.replaced.items():
                db.execute("DELETE FROM members WHERE segment_id = ?", (segment_id,))
                db.execute("DELETE FROM sizes WHERE segment_id = ?", (segment_id,))
                delta[segment_id] = self._insert(db, segment_id, dense)  # counts from zero
            for segment_id, dense in commit.enters.items():
                delta[segment_id] = delta.get(segment_id, 0) + self._insert(db, segment_id, dense)
            for segment_id, dense in commit.exits.items():
                removed = db.executemany(
                    "DELETE FROM members WHERE segment_id = ? AND dense = ?",
                    [(segment_id, int(d)) for d in dense],
                ).rowcount
                delta[segment_id] = delta.get(segment_id, 0) - removed
            db.executemany(
                "INSERT INTO sizes (segment_id, size) VALUES (?, ?) "
                "ON CONFLICT (segment_id) DO UPDATE SET size = size + excluded.size",
                sorted(delta.items()),
            )
            db.executemany(
                "INSERT INTO positions (partition, next_offset) VALUES (?, ?) "
                "ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset",
                sorted(commit.positions.items()),
            )
            db.execute(
                "INSERT INTO journal (positions, now) VALUES (?, ?)",
                (json.dumps(commit.positions), commit.now),
            )
            db.executemany(
                "INSERT INTO changes (segment_id, user_id, dense, change, at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(c.segment_id, c.user_id, c.dense, c.change, c.at) for c in commit.changes],
            )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('applied', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (commit.applied,),
            )

    @staticmethod
    def _insert(db: sqlite3.Connection, segment_id: str, dense: Sequence[int]) -> int:
        """Insert members; returns how many were new."""
        return db.executemany(
            "INSERT OR IGNORE INTO members (segment_id, dense) VALUES (?, ?)",
            [(segment_id, int(d)) for d in dense],
        ).rowcount

    def positions(self) -> dict[int, int]:
        return {
            int(p): int(o) for p, o in self._read("SELECT partition, next_offset FROM positions")
        }

    def journal(self) -> list[JournalEntry]:
        rows = self._read("SELECT positions, now FROM journal ORDER BY seq")
        return [
            JournalEntry({int(k): int(v) for k, v in json.loads(p).items()}, int(now))
            for p, now in rows
        ]

    def prune_journal(self, positions: Mapping[int, int]) -> None:
        with self._transaction() as db:
            rows = db.execute("SELECT seq, positions FROM journal ORDER BY seq").fetchall()
            covered = [
                seq
                for seq, text in rows
                if all(int(v) <= positions.get(int(k), 0) for k, v in json.loads(text).items())
            ]
            db.executemany("DELETE FROM journal WHERE seq = ?", [(s,) for s in covered])

    # -- readers ----------------------------------------------------------------------

    def profile(self, user_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT doc FROM profiles WHERE user_id = ?", (user_id,))
        return msgspec.json.decode(rows[0][0]) if rows else None

    def user_segments(self, user_id: str) -> list[str]:
        rows = self._read(
            "SELECT m.segment_id FROM members m JOIN profiles p ON p.dense = m.dense "
            "WHERE p.user_id = ? ORDER BY m.segment_id",
            (user_id,),
        )
        return [r[0] for r in rows]

    def members(
        self, segment_id: str, after: int | None, limit: int
    ) -> tuple[list[str], int | None]:
        rows = self._read(
            "SELECT m.dense, p.user_id FROM members m JOIN profiles p ON p.dense = m.dense "
            "WHERE m.segment_id = ? AND m.dense > ? ORDER BY m.dense LIMIT ?",
            (segment_id, -1 if after is None else after, limit + 1),
        )
        page = rows[:limit]
        cursor = int(page[-1][0]) if len(rows) > limit else None
        return [r[1] for r in page], cursor

    def bitmap(self, segment_id: str) -> BitMap:
        rows = self._read("SELECT dense FROM members WHERE segment_id = ?", (segment_id,))
        return BitMap(r[0] for r in rows)

    def users(self, after: int = -1) -> BitMap:
        rows = self._read("SELECT dense FROM profiles WHERE dense > ?", (after,))
        return BitMap(r[0] for r in rows)

    def sizes(self) -> dict[str, int]:
        return {s: int(n) for s, n in self._read("SELECT segment_id, size FROM sizes")}

    def applied(self) -> int:
        rows = self._read("SELECT value FROM meta WHERE key = 'applied'")
        return int(rows[0][0]) if rows else 0

    def changes_since(self, sequence: int, limit: int = 10_000) -> list[tuple[int, ChangeRecord]]:
        rows = self._read(
            "SELECT seq, segment_id, user_id, dense, change, at FROM changes "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (sequence, limit),
        )
        return [(int(r[0]), ChangeRecord(r[1], r[2], int(r[3]), r[4], int(r[5]))) for r in rows]

    def last_change(self) -> int:
        rows = self._read("SELECT MAX(seq) FROM changes")
        return int(rows[0][0] or 0)

    def submit(self, kind: str, payload: bytes) -> str:
        request_id = secrets.token_hex(12)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO requests (id, kind, payload, created) VALUES (?, ?, ?, ?)",
                (request_id, kind, payload, int(time.time() * 1000)),
            )
        return request_id

    def pending(self, limit: int = 16) -> list[tuple[str, str, bytes]]:
        rows = self._read(
            "SELECT id, kind, payload FROM requests WHERE response IS NULL "
            "ORDER BY created LIMIT ?",
            (limit,),
        )
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def respond(self, request_id: str, response: bytes) -> None:
        with self._transaction() as db:
            db.execute("UPDATE requests SET response = ? WHERE id = ?", (response, request_id))
            # Answers are read within seconds; an hour is plenty.
            db.execute(
                "DELETE FROM requests WHERE response IS NOT NULL AND created < ?",
                (int(time.time() * 1000) - 3_600_000,),
            )

    def response(self, request_id: str) -> bytes | None:
        rows = self._read("SELECT response FROM requests WHERE id = ?", (request_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def close(self) -> None:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
