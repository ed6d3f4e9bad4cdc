"""The embedded state store: one SQLite database in WAL mode.

Processors write (one at a time: each commit is an immediate transaction); any number of
reader processes (the APIs) read the same file concurrently and see whole commits only.
Durability: WAL with ``synchronous=NORMAL`` survives a crash of any process; after a power
loss the newest commits may be missing, together with their positions, and are rebuilt by
replaying the event log.
"""

from __future__ import annotations

import array
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from pyroaring import BitMap

from audience_manager.store.base import (
    ChangeBlock,
    ChangeRecord,
    DenseIds,
    JournalEntry,
    StateCommit,
    StateStore,
    StoreUnavailable,
    check_base,
)
from audience_manager.store.changelog import (
    BLOCKS_PER_READ,
    encode_block,
    read_blocks,
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
CREATE TABLE IF NOT EXISTS member_chunks (
    segment_id TEXT NOT NULL, chunk INTEGER NOT NULL, bits BLOB NOT NULL,
    PRIMARY KEY (segment_id, chunk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS member_chunks_by_chunk ON member_chunks (chunk);
CREATE TABLE IF NOT EXISTS sizes (segment_id TEXT PRIMARY KEY, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS change_blocks (
    last INTEGER PRIMARY KEY, first INTEGER NOT NULL, lines BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, payload BLOB NOT NULL, created INTEGER NOT NULL,
    response BLOB, partition INTEGER
);
"""

#: Members are stored as Roaring bitmaps of 2**16 dense ids each, one row per segment and
#: chunk: a commit rewrites only the chunks its enters and exits fall in.
CHUNK_BITS = 16

_rows_encoder = msgspec.json.Encoder()


class _Chunks:
    """The member chunks one commit reads and rewrites, and how their sizes moved."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.loaded: dict[tuple[str, int], BitMap] = {}
        self.before: dict[tuple[str, int], int] = {}
        self.dirty: set[tuple[str, int]] = set()

    def get(self, segment_id: str, chunk: int) -> BitMap:
        key = (segment_id, chunk)
        bits = self.loaded.get(key)
        if bits is None:
            row = self.db.execute(
                "SELECT bits FROM member_chunks WHERE segment_id = ? AND chunk = ?", key
            ).fetchone()
            bits = self._load(key, row[0] if row else None)
        return bits

    def _load(self, key: tuple[str, int], blob: bytes | None) -> BitMap:
        bits = BitMap.deserialize(blob) if blob is not None else BitMap()
        self.loaded[key] = bits
        self.before[key] = len(bits)
        return bits

    def of_chunk(self, chunk: int) -> list[tuple[str, BitMap]]:
        """Every segment's bitmap of one chunk."""
        for segment_id, blob in self.db.execute(
            "SELECT segment_id, bits FROM member_chunks WHERE chunk = ?", (chunk,)
        ).fetchall():
            if (segment_id, chunk) not in self.loaded:
                self._load((segment_id, chunk), blob)
        return [(key[0], bits) for key, bits in self.loaded.items() if key[1] == chunk]

    def forget(self, segment_id: str) -> None:
        """The segment's rows were deleted: its chunks start empty again."""
        for key in [k for k in self.loaded if k[0] == segment_id]:
            del self.loaded[key], self.before[key]
            self.dirty.discard(key)

    def change(self, segment_id: str, dense: DenseIds, add: bool) -> None:
        ids = np.asarray(dense, dtype=np.int64)
        if not len(ids):
            return
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():  # the processor's are sorted
            ids = np.unique(ids)
        chunks = ids >> CHUNK_BITS
        bounds = np.flatnonzero(np.diff(chunks)) + 1
        for part in np.split(ids, bounds):
            chunk = int(part[0]) >> CHUNK_BITS
            bits = self.get(segment_id, chunk)
            # pyroaring copies an array.array at once but walks a numpy array id by id.
            values = array.array("I", part.astype(np.uint32).tobytes())
            if add:
                bits.update(values)
            else:
                bits.difference_update(BitMap(values))
            self.dirty.add((segment_id, chunk))

    def write(self) -> dict[str, int]:
        """Store the changed chunks; returns each segment's change in size."""
        delta: dict[str, int] = {}
        replace, delete = [], []
        for key in sorted(self.dirty):
            bits = self.loaded[key]
            delta[key[0]] = delta.get(key[0], 0) + len(bits) - self.before[key]
            if bits:
                replace.append((key[0], key[1], bits.serialize()))
            else:
                delete.append(key)
        self.db.executemany(
            "INSERT OR REPLACE INTO member_chunks (segment_id, chunk, bits) VALUES (?, ?, ?)",
            replace,
        )
        self.db.executemany("DELETE FROM member_chunks WHERE segment_id = ? AND chunk = ?", delete)
        return delta


class EmbeddedStateStore(StateStore):
    """State in ``directory/state.db``; one connection per thread."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "state.db"
        self._local = threading.local()
        try:
            self._connection().executescript(_SCHEMA)  # idempotent; runs its own transaction
            self._upgrade()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot create {self.path}: {exc}") from exc

    def _upgrade(self) -> None:
        """Bring a database of an earlier layout up to date: requests get their partition;
        members and change lines of the row-per-line layout move into blocks."""
        columns = {r[1] for r in self._read("PRAGMA table_info(requests)")}
        if "partition" not in columns:
            with self._transaction() as db:
                db.execute("ALTER TABLE requests ADD COLUMN partition INTEGER")
        tables = {r[0] for r in self._read("SELECT name FROM sqlite_master WHERE type='table'")}
        if "members" not in tables:
            return
        with self._transaction() as db:
            chunks = _Chunks(db)
            segments = [r[0] for r in db.execute("SELECT DISTINCT segment_id FROM members")]
            for segment_id in segments:
                dense = db.execute(
                    "SELECT dense FROM members WHERE segment_id = ?", (segment_id,)
                ).fetchall()
                chunks.change(segment_id, [d for (d,) in dense], add=True)
            chunks.write()
            lines = [
                ChangeRecord(*row)
                for row in db.execute(
                    "SELECT segment_id, user_id, dense, change, at FROM changes ORDER BY seq"
                )
            ]
            last = int(db.execute("SELECT MAX(seq) FROM changes").fetchone()[0] or 0)
            if lines:
                db.execute(
                    "INSERT INTO change_blocks (last, first, lines) VALUES (?, ?, ?)",
                    (last, last - len(lines) + 1, encode_block(lines)),
                )
            db.execute("DROP TABLE members")
            db.execute("DROP TABLE changes")

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages per connection
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
            last = db.execute("SELECT value FROM meta WHERE key = 'commit'").fetchone()
            if last is not None and last[0] == commit.id:
                return
            if commit.base is not None:
                stored = db.execute("SELECT partition, next_offset FROM positions").fetchall()
                check_base(commit, dict(stored))
            chunks = _Chunks(db)
            erased = [p.dense for p in commit.profiles if p.doc is None]
            for row in erased:
                for segment_id, bits in chunks.of_chunk(row >> CHUNK_BITS):
                    bits.discard(row)
                    chunks.dirty.add((segment_id, row >> CHUNK_BITS))
            if erased:
                db.executemany("DELETE FROM profiles WHERE dense = ?", [(d,) for d in erased])
            # One statement for every profile: the database walks the rows without the GIL.
            written = _rows_encoder.encode(
                [(p.dense, p.user_id, msgspec.Raw(p.doc)) for p in commit.profiles if p.doc]
            )
            db.execute(
                "INSERT INTO profiles (dense, user_id, doc) "
                "SELECT value ->> 0, value ->> 1, value -> 2 FROM json_each(?) "
                "ORDER BY 1 ON CONFLICT (dense) DO UPDATE SET doc = excluded.doc",
                (written,),
            )
            reset = [*commit.dropped, *commit.replaced]
            for segment_id in reset:
                db.execute("DELETE FROM member_chunks WHERE segment_id = ?", (segment_id,))
                db.execute("DELETE FROM sizes WHERE segment_id = ?", (segment_id,))
                chunks.forget(segment_id)
            for segment_id, members in commit.replaced.items():
                chunks.change(segment_id, members, add=True)
            for segment_id, entered in commit.enters.items():
                chunks.change(segment_id, entered, add=True)
            for segment_id, exited in commit.exits.items():
                chunks.change(segment_id, exited, add=False)
            delta = chunks.write()
            for segment_id in commit.dropped:
                delta.pop(segment_id, None)
            for segment_id in commit.replaced:
                delta.setdefault(segment_id, 0)  # an empty replacement still has a size
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
            if commit.changes:
                first = int(db.execute("SELECT MAX(last) FROM change_blocks").fetchone()[0] or 0)
                db.execute(
                    "INSERT INTO change_blocks (last, first, lines) VALUES (?, ?, ?)",
                    (first + len(commit.changes), first + 1, encode_block(commit.changes)),
                )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('applied', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (commit.applied,),
            )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('commit', ?)", [commit.id])

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

    def profile(self, user_id: str) -> bytes | None:
        rows = self._read("SELECT doc FROM profiles WHERE user_id = ?", (user_id,))
        if not rows:
            return None
        doc = rows[0][0]
        return doc.encode() if isinstance(doc, str) else bytes(doc)

    def user_segments(self, user_id: str) -> list[str]:
        rows = self._read(
            "SELECT c.segment_id, c.bits, p.dense FROM profiles p "
            "JOIN member_chunks c ON c.chunk = (p.dense >> ?) WHERE p.user_id = ?",
            (CHUNK_BITS, user_id),
        )
        return sorted(s for s, bits, dense in rows if dense in BitMap.deserialize(bits))

    def members(
        self, segment_id: str, after: int | None, limit: int
    ) -> tuple[list[str], int | None]:
        after = -1 if after is None else after
        dense: list[int] = []
        for (bits,) in self._read(
            "SELECT bits FROM member_chunks WHERE segment_id = ? AND chunk >= ? ORDER BY chunk",
            (segment_id, max(after, 0) >> CHUNK_BITS),
        ):
            chunk = BitMap.deserialize(bits)
            start = chunk.rank(after) if after >= 0 else 0
            dense.extend(chunk[start : start + limit + 1 - len(dense)])
            if len(dense) > limit:
                break
        page = dense[:limit]
        users = dict(
            self._read(
                "SELECT dense, user_id FROM profiles "
                "WHERE dense IN (SELECT value FROM json_each(?))",
                (json.dumps(page),),
            )
        )
        cursor = page[-1] if len(dense) > limit else None
        return [users[d] for d in page if d in users], cursor

    def bitmap(self, segment_id: str) -> BitMap:
        rows = self._read("SELECT bits FROM member_chunks WHERE segment_id = ?", (segment_id,))
        return BitMap.union(BitMap(), *(BitMap.deserialize(bits) for (bits,) in rows))

    def users(self, after: int = -1) -> BitMap:
        rows = self._read("SELECT dense FROM profiles WHERE dense > ?", (after,))
        return BitMap(r[0] for r in rows)

    def sizes(self) -> dict[str, int]:
        return {s: int(n) for s, n in self._read("SELECT segment_id, size FROM sizes")}

    def applied(self) -> int:
        rows = self._read("SELECT value FROM meta WHERE key = 'applied'")
        return int(rows[0][0]) if rows else 0

    def change_blocks_since(
        self, sequence: int, limit: int = 10_000
    ) -> list[tuple[int, ChangeBlock]]:
        def fetch(after: int) -> list[tuple[int, bytes]]:
            return self._read(
                "SELECT last, lines FROM change_blocks WHERE last > ? ORDER BY last LIMIT ?",
                (after, BLOCKS_PER_READ),
            )

        return read_blocks(fetch, sequence, limit)

    def last_change(self) -> int:
        rows = self._read("SELECT MAX(last) FROM change_blocks")
        return int(rows[0][0] or 0)

    def trim_changes(self, through: int) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM change_blocks WHERE last <= ? "
                "AND last < (SELECT MAX(last) FROM change_blocks)",
                (through,),
            )

    def marker(self, name: str) -> int:
        rows = self._read("SELECT value FROM meta WHERE key = ?", ("marker:" + name,))
        return int(rows[0][0]) if rows else 0

    def set_marker(self, name: str, value: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ("marker:" + name, value),
            )

    def submit(self, kind: str, payload: bytes, partition: int | None = None) -> str:
        request_id = secrets.token_hex(12)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO requests (id, kind, payload, created, partition) "
                "VALUES (?, ?, ?, ?, ?)",
                (request_id, kind, payload, int(time.time() * 1000), partition),
            )
        return request_id

    def pending(
        self, limit: int = 16, partitions: Collection[int] | None = None
    ) -> list[tuple[str, str, bytes]]:
        parameters: list[Any]
        if partitions is None:
            where, parameters = " AND partition IS NULL", [limit]
        else:
            where = " AND partition IN (SELECT value FROM json_each(?))"
            parameters = [json.dumps(sorted(partitions)), limit]
        rows = self._read(
            "SELECT id, kind, payload FROM requests WHERE response IS NULL"
            + where
            + " ORDER BY created LIMIT ?",
            parameters,
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
