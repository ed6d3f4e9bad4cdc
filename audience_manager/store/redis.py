"""The Redis state store: Redis 6.2+ or Valkey, shared by the processor and every API replica.

Layout (every key starts with the hash tag ``{prefix}``, so a commit touches one slot of a
cluster and runs as one transaction):

``profiles``         hash user id → ``b"<dense>:" + doc`` (the dense id rides along, so a
                     user costs one field, not a second user → dense hash)
``names:<d >> 7>``   hash ``d & 127`` → user id: dense → user id in buckets of 128, which
                     Redis keeps as compact listpacks (a third of a hash field each)
``users``            bitmap: bit ``d`` is set while user ``d`` has a profile
``members:<segment>`` bitmap: bit ``d`` is set while user ``d`` is a member
``sizes``            hash segment id → member count, kept exact
``positions``        hash partition → next offset
``journal``          hash commit number → msgpack ``[positions, now]``
``changes``          stream: one entry per commit with change lines, its id ``<last line>-0``
                     and its lines one column-wise msgpack blob (``changelog.py``), as
                     in the embedded store's blocks
``meta``             hash: ``commit`` (the last commit's id), ``commits``, ``lines``,
                     ``applied``
``commit-lock``      string, with an expiry: the token of the commit under way, if any
``pending``, ``requests``, ``request:<id>``  requests for the processor: unanswered ids in
                     order of submission (a sorted set and its counter), and one hash per
                     request (kept an hour once answered)

Why native bitmaps for members rather than Roaring chunks as in the embedded store: a commit
flips bits in place with ``BITFIELD`` (a few bytes per change, in the command and in the
append-only file) and recounts the segments it changed with ``BITCOUNT`` (a popcount, about
0.1 ms per 10M users) inside the same transaction, so sizes are exact. Roaring chunks would
have to be read, changed and rewritten whole by the client on every commit. Where a segment's
changes in a commit lie close together (a cold start, a new segment filling up), the byte
range they fall in is read after ``WATCH`` and written back with ``SETRANGE`` instead: one
command rather than thousands of bit operations. Reads stay fast:
``bitmap`` fetches one string (1.25 MB at 10M users) and turns it into Roaring's serialized
form with numpy (a full 8 KB container is the string's bytes, bit-reversed), which pyroaring
loads at once. The cost is memory: a segment takes (highest member id) / 8 bytes however few
members it has.

Atomicity and exactly-once: a commit is one ``MULTI``/``EXEC`` under ``WATCH meta``. Before
the transaction it reads ``meta``; if ``commit`` there is this commit's id, the commit was
already applied (say ``EXEC`` ran but the connection dropped before its reply) and nothing is
written again. Otherwise the transaction applies everything and records the id. A retry after
a dropped connection goes round the same check on a new connection; if the first ``EXEC`` is
still to run when the retry reads, ``WATCH`` aborts whichever of the two runs second. Every
command in the transaction has its input checked beforehand, so none fails inside ``EXEC``
(Redis would not roll the others back).

Several processors: each commit reads and writes ``meta``, so two processors' commits
overlapping in time make one of them start again (``WATCH`` aborts it). Left to chance, a
cold start had about every second commit of two processors start again, and each retry
repeats the reads and the pipeline of a commit that can run to megabytes. So a commit
first takes ``commit-lock`` (``SET NX PX``, a few milliseconds' waits while another holds
it) and releases it inside its own transaction. The lock only spares that wasted work:
correctness still rests on ``WATCH``, and a holder that died lets go when the lock expires
(``_LOCK_TTL_MS``). The Lua scripts reach member keys by the prefix they
are given; all keys hash to the tag's slot, which Redis Cluster allows.

Redis Cluster: the URL may name any node. The store asks it which node serves the tag's
slot (``CLUSTER SLOTS``) and talks to that one; a ``MOVED`` answer (a failover, a resharding)
sends it after the slot, and the call fails as unavailable so the caller retries. Different
prefixes (``AM_STATE_PREFIX``) land on different slots, so several platforms spread over a
cluster's nodes; one platform's state lives on one node (and its replicas).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import secrets
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import msgspec
import numpy as np
import numpy.typing as npt
import valkey
from pyroaring import BitMap
from valkey.backoff import ExponentialBackoff
from valkey.retry import Retry

from audience_manager.store.base import (
    ChangeBlock,
    DenseIds,
    JournalEntry,
    ProfileWrite,
    StateCommit,
    StateStore,
    StoreError,
    StoreUnavailable,
    check_base,
)
from audience_manager.store.changelog import (
    BLOCKS_PER_READ,
    encode_block,
    read_blocks,
)

__all__ = ["RedisStateStore"]

#: Errors the server answers while it cannot serve for a while (a long script, a failover);
#: the client library raises ``ConnectionError`` for ``LOADING`` (a restart) itself.
_TRANSIENT = ("BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOREPLICAS")
_TLS_SCHEMES = ("rediss", "valkeys")
_MOVED = re.compile(r"MOVED \d+ (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")
#: How long a commit keeps trying while other processors' commits come first (WATCH
#: conflicts): they share the commit counter, so with several processors that is routine.
_COMMIT_PATIENCE = 30.0
#: The commit lock's expiry: what a processor that died holding it costs the others.
_LOCK_TTL_MS = 5_000
_BITFIELD_OPS = 256
_DENSE, _DOC, _USER_ID = attrgetter("dense"), attrgetter("doc"), attrgetter("user_id")
# A BITFIELD operation costs about this many bytes to send, parse and log: a segment whose
# changes are denser than that is cheaper rewritten as the byte range they fall in.
_PATCH_BYTES = 16
_HSET_ARGS = 2_000  # the server parses and runs a few commands of this size faster than one
_NAME_BITS = 7
_NAME_MASK = (1 << _NAME_BITS) - 1
_CONTAINER = 1 << 13  # bytes of one Roaring container (2**16 ids)
_ARRAY_MAX = 4096  # Roaring stores containers with at most this many ids as arrays
_LSB_FIRST = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)
_ANSWER_TTL = 3600

_journal_decoder = msgspec.msgpack.Decoder(tuple[dict[int, int], int])

# KEYS[1] the commit lock; ARGV[1] the holder's token. Deletes the lock if still theirs.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] sizes; ARGV: members key prefix, then the segments whose members changed.
_RECOUNT = """
for i = 2, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], redis.call('BITCOUNT', ARGV[1] .. ARGV[i]))
end
"""

# KEYS: the request, the pending ids, their counter; ARGV: id, kind, payload. Run again (a
# retry), it leaves the request where it was in the queue.
_SUBMIT = """
redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'payload', ARGV[3], 'queue', KEYS[2])
redis.call('ZADD', KEYS[2], 'NX', redis.call('INCR', KEYS[3]), ARGV[1])
"""

# The answer, and the request off the queue it was submitted to.
_RESPOND = """
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('HSET', KEYS[1], 'response', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', queue or KEYS[2], ARGV[3])
"""

# KEYS[1] profiles, KEYS[2] sizes; ARGV: members key prefix, user id.
_USER_SEGMENTS = """
local stored = redis.call('HGET', KEYS[1], ARGV[2])
if not stored then return {} end
local dense, found = tonumber(string.match(stored, '^%d+')), {}
for _, segment in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('GETBIT', ARGV[1] .. segment, dense) == 1 then found[#found + 1] = segment end
end
return found
"""


def _bitmap(data: bytes, first: int = 0) -> BitMap:
    """The ids set in a Redis bitmap string whose first byte holds id ``first * 2**16``.

    Built as Roaring's portable serialization: each 2**16 ids with more than 4,096 set are a
    bitmap container, the string's 8 KB with the bits of each byte reversed; sparser ones are
    arrays of their set positions.
    """
    raw = np.frombuffer(data, np.uint8)
    blocks = np.zeros((-(-len(raw) // _CONTAINER), _CONTAINER), np.uint8)
    blocks.reshape(-1)[: len(raw)] = raw
    cards = np.bitwise_count(blocks.view(np.uint64)).sum(axis=1)
    keys = np.flatnonzero(cards)
    sparse = blocks[keys[cards[keys] <= _ARRAY_MAX]]
    rows, byte = np.nonzero(sparse)
    hit, bit = np.nonzero(np.unpackbits(sparse[rows, byte][:, None], axis=1, bitorder="big"))
    positions = (byte[hit] * 8 + bit).astype("<u2")
    bodies: list[bytes] = []
    taken = 0
    for key in keys.tolist():
        count = int(cards[key])
        if count > _ARRAY_MAX:
            bodies.append(_LSB_FIRST[blocks[key]].tobytes())
        else:
            bodies.append(positions[taken : taken + count].tobytes())
            taken += count
    header = np.empty((len(keys), 2), "<u2")
    header[:, 0] = keys + first
    header[:, 1] = cards[keys] - 1
    lengths = np.fromiter(map(len, bodies), np.int64, len(bodies))
    offsets = (8 + 8 * len(keys) + np.cumsum(lengths) - lengths).astype("<u4")
    cookie = np.array([12346, len(keys)], "<u4")  # no run containers, then the count
    return BitMap.deserialize(
        b"".join([cookie.tobytes(), header.tobytes(), offsets.tobytes(), *bodies])
    )


def _redacted(url: str) -> str:
    """``url`` without its password and query (which may carry one)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username or ''}:***@" if parts.password else ""
    return f"{parts.scheme}://{user}{host}{parts.path}"


def _checked(ids: Iterable[int] | npt.NDArray[np.int64]) -> list[int] | npt.NDArray[np.int64]:
    """``ids`` as a list (an array stays one), all valid bitmap offsets (a bad one would
    fail inside EXEC)."""
    if isinstance(ids, np.ndarray):
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= 1 << 32):
            raise ValueError("dense ids must be in [0, 2**32)")
        return ids
    ids = list(ids)
    if ids and (min(ids) < 0 or max(ids) >= 1 << 32):
        raise ValueError("dense ids must be in [0, 2**32)")
    return ids


def _bitfields(
    ids: Iterable[int] | npt.NDArray[np.int64], value: bytes | None
) -> list[list[bytes]]:
    """``BITFIELD`` arguments setting the bit of every id to ``value`` (getting it for None),
    a few hundred operations a call: the server grows its list of operations one at a time,
    so longer calls cost more per operation."""
    if isinstance(ids, np.ndarray):
        ids = ids.tolist()
    ops = [
        (b"GET", b"u1", b"%d" % d) if value is None else (b"SET", b"u1", b"%d" % d, value)
        for d in ids
    ]
    step = _BITFIELD_OPS
    return [[x for op in ops[i : i + step] for x in op] for i in range(0, len(ops), step)]


@dataclass(frozen=True, slots=True)
class _Patch:
    """A segment's enters and exits as the bytes ``low`` to ``high`` of its bitmap rewritten."""

    low: int
    high: int
    entered: npt.NDArray[np.int64]
    exited: npt.NDArray[np.int64]

    @classmethod
    def of(cls, entered: DenseIds, exited: DenseIds) -> _Patch | None:
        """The patch of a segment's changes, None where BITFIELD costs less."""
        ins, outs = np.asarray(entered, np.int64), np.asarray(exited, np.int64)
        both = np.concatenate((ins, outs))
        if not len(both):
            return None
        low, high = int(both.min()) >> 3, int(both.max()) >> 3
        if high - low + 1 > _PATCH_BYTES * len(both):
            return None
        return cls(low, high, ins, outs)

    def apply(self, stored: bytes, erased: npt.NDArray[np.int64]) -> bytes:
        """The range's new bytes from its ``stored`` ones: erased users' bits cleared, then
        the enters' set and the exits' cleared, in the order the transaction runs them."""
        raw = np.zeros(self.high - self.low + 1, np.uint8)
        raw[: len(stored)] = np.frombuffer(stored, np.uint8)
        bits = np.unpackbits(raw, bitorder="big").view(np.bool_)
        start = self.low << 3
        gone = erased[(erased >= start) & (erased < start + len(bits))]
        bits[gone - start] = False
        bits[self.entered - start] = True
        bits[self.exited - start] = False
        return np.packbits(bits, bitorder="big").tobytes()


def _bitmap_of(ids: DenseIds) -> tuple[bytes, int]:
    """A Redis bitmap string with the bits of ``ids`` set, and how many there are."""
    unique = np.unique(np.asarray(ids, np.int64))
    if not len(unique):
        return b"", 0
    bits = np.zeros(int(unique[-1]) + 1, bool)
    bits[unique] = True
    return np.packbits(bits, bitorder="big").tobytes(), len(unique)


def _new_users(writes: _Writes, stored: bytes) -> tuple[list[tuple[int, bytes]], int, bytes]:
    """The written profiles' users who had none, as (dense id, user id) in dense order, and the
    users bitmap from the first one's byte to the last one's with their bits set.

    ``stored`` is the users bitmap from the lowest written id's byte to the highest's; users
    erased in the same commit count as new, and their bits stay clear unless written again.
    """
    dense = writes.dense
    low = int(dense.min()) >> 3
    bits = np.zeros((int(dense.max()) >> 3) - low + 1, np.uint8)
    bits[: len(stored)] = np.frombuffer(stored, np.uint8)
    offsets = dense - (low << 3)
    masks = (0x80 >> (offsets & 7)).astype(np.uint8)
    erased = np.fromiter((p.dense for p in writes.erased), np.int64, len(writes.erased))
    new = ((bits[offsets >> 3] & masks) == 0) | np.isin(dense, erased)
    if not new.any():
        return [], 0, b""
    gone = erased[(erased >= low << 3) & (erased < (low + len(bits)) << 3)] - (low << 3)
    np.bitwise_and.at(bits, gone >> 3, ~(0x80 >> (gone & 7)).astype(np.uint8))
    np.bitwise_or.at(bits, offsets[new] >> 3, masks[new])
    first, last = int(offsets[new].min()) >> 3, int(offsets[new].max()) >> 3
    chosen = np.flatnonzero(new)[np.argsort(dense[new], kind="stable")].tolist()
    users = [(writes.written[i].dense, writes.written[i].user_id.encode()) for i in chosen]
    return users, low + first, bits[first : last + 1].tobytes()


@dataclass(frozen=True, slots=True)
class _Writes:
    """What a commit writes, prepared once however often its transaction is tried."""

    written: list[ProfileWrite]
    dense: np.ndarray[tuple[int], np.dtype[np.int64]]  # of the written profiles
    erased: list[ProfileWrite]
    profiles: list[bytes]  # HSET arguments: user id, dense id and doc
    replaced: dict[str, tuple[bytes, int]]  # segment → its members' bitmap and count
    flips: list[tuple[str, list[list[bytes]]]]  # segment → BITFIELD calls, enters then exits
    patches: dict[str, _Patch]  # segments whose changes are dense: rewritten byte ranges

    @classmethod
    def of(cls, commit: StateCommit) -> _Writes:
        _checked(map(_DENSE, commit.profiles))
        docs = list(map(_DOC, commit.profiles))
        written, erased = commit.profiles, []
        if None in docs:
            written = [p for p in commit.profiles if p.doc is not None]
            erased = [p for p in commit.profiles if p.doc is None]
            docs = list(map(_DOC, written))
        written_dense = list(map(_DENSE, written))
        # Bytes, not str: the client packs bytes arguments three times faster.
        profiles = [b""] * (2 * len(written))
        profiles[::2] = map(str.encode, map(_USER_ID, written))
        profiles[1::2] = map(bytes.__add__, map(b"%d:".__mod__, written_dense), docs)
        replaced = {s: _bitmap_of(_checked(ids)) for s, ids in commit.replaced.items()}
        patches: dict[str, _Patch] = {}
        for segment_id in {**commit.enters, **commit.exits}:
            if segment_id in commit.replaced or segment_id in commit.dropped:
                continue  # their bitmaps are replaced or deleted first
            entered = _checked(commit.enters.get(segment_id, ()))
            exited = _checked(commit.exits.get(segment_id, ()))
            if (patch := _Patch.of(entered, exited)) is not None:
                patches[segment_id] = patch
        flips = [
            (segment_id, _bitfields(checked, value))
            for value, changes in ((b"1", commit.enters), (b"0", commit.exits))
            for segment_id, ids in changes.items()
            if segment_id not in patches and len(checked := _checked(ids))
        ]
        dense = np.array(written_dense, np.int64)
        return cls(written, dense, erased, profiles, replaced, flips, patches)


class _Commands(Protocol):
    """What the store calls on the valkey client and its pipelines, which are untyped."""

    def execute_command(self, *args: Any) -> Any: ...


class _Pipeline(_Commands, Protocol):
    def watch(self, *names: str) -> None: ...
    def multi(self) -> None: ...
    def execute(self) -> list[Any]: ...
    def reset(self) -> None: ...


class _Client(_Commands, Protocol):
    def pipeline(self, transaction: bool = True) -> _Pipeline: ...
    def close(self) -> None: ...


def _connect(url: str) -> _Client:
    # Over TLS, valkey-py checks that the server's certificate is signed by a trusted CA but
    # not, by default, that it names the host: any certificate of that CA would pass. The
    # URL's own ``ssl_check_hostname`` (query) still decides where given.
    tls = {"ssl_check_hostname": True} if urlsplit(url).scheme in _TLS_SCHEMES else {}
    return cast(
        _Client,
        valkey.Valkey.from_url(
            url,
            socket_timeout=10.0,
            socket_connect_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
            retry_on_error=[valkey.ConnectionError, valkey.TimeoutError],
            **tls,
        ),
    )


class RedisStateStore(StateStore):
    """State in Redis or Valkey at ``url`` (``redis://``, ``rediss://``, ``valkey://``,
    ``valkeys://``), under keys tagged ``{prefix}``; thread-safe."""

    def __init__(self, url: str, prefix: str = "am") -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"the key prefix must be non-empty, without braces: {prefix!r}")
        self.prefix = prefix
        self._seed = self._target = url
        self._url = _redacted(url)
        self._client = _connect(url)
        self._routed = False  # whether the client is known to talk to the tag's node

    def __repr__(self) -> str:
        return f"RedisStateStore({self._url!r}, prefix={self.prefix!r})"

    def _route(self) -> None:
        """On Redis Cluster, talk to the node serving the tag's slot (every key lives
        there); a single server serves every key itself."""
        try:
            slots = self._client.execute_command("CLUSTER", "SLOTS")
        except valkey.ResponseError:  # cluster support disabled: a single server
            self._routed = True
            return
        slot = int(self._client.execute_command("CLUSTER", "KEYSLOT", "{" + self.prefix + "}"))
        for first, last, owner, *_ in slots:
            if int(first) <= slot <= int(last):
                host = owner[0].decode() if isinstance(owner[0], bytes) else str(owner[0])
                self._follow(host, int(owner[1]))
                return
        raise StoreUnavailable(f"{self!r}: no cluster node serves slot {slot}")

    def _follow(self, host: str, port: int) -> None:
        """Talk to ``host:port`` from now on (same credentials, TLS and options)."""
        parts = urlsplit(self._seed)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
        url = parts._replace(netloc=netloc).geturl()
        if url != self._target:
            self._client.close()
            self._client = _connect(url)
            self._target, self._url = url, _redacted(url)
        self._routed = True

    def _key(self, *parts: str) -> str:
        """A key of this store: all share the hash tag, so they live in one cluster slot."""
        return ":".join(("{" + self.prefix + "}", *parts))

    def _name_key(self, dense: int) -> str:
        return self._key("names", str(dense >> _NAME_BITS))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            if not self._routed:
                self._route()
            yield
        except (valkey.ConnectionError, valkey.TimeoutError, valkey.ReadOnlyError) as exc:
            self._routed = False  # a failover may have moved the slot: ask again next time
            raise StoreUnavailable(f"{self!r}: {exc}") from exc
        except valkey.ResponseError as exc:
            moved = _MOVED.search(str(exc))
            if moved is not None:  # the slot moved: go after it, the caller retries
                self._follow(moved["host"], int(moved["port"]))
                raise StoreUnavailable(f"{self!r}: {exc}") from exc
            if str(exc).startswith(_TRANSIENT):
                raise StoreUnavailable(f"{self!r}: {exc}") from exc
            raise StoreError(f"{self!r}: {exc}") from exc

    @contextmanager
    def _pipeline(self, transaction: bool = True) -> Iterator[_Pipeline]:
        pipe = self._client.pipeline(transaction)
        try:
            yield pipe
        finally:
            pipe.reset()

    def _call(self, *args: Any) -> Any:
        with self._errors():
            return self._client.execute_command(*args)

    # -- the processor ----------------------------------------------------------------

    def commit(self, commit: StateCommit) -> None:
        writes = _Writes.of(commit)
        deadline = time.monotonic() + _COMMIT_PATIENCE
        token = secrets.token_hex(8)
        with self._errors():
            for attempt in itertools.count():
                self._lock(token, deadline)
                released = False
                try:
                    with self._pipeline() as pipe:
                        released = self._transaction(pipe, commit, writes, token)
                        return
                except valkey.WatchError:
                    pass  # another commit came first (its lock expired), or a drop
                finally:
                    if not released:
                        self._unlock(token)
                if time.monotonic() > deadline:
                    break
                # Apart at random, so that two processors do not collide again in step.
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise StoreUnavailable(
            f"{self!r}: the commit did not go through in {_COMMIT_PATIENCE:.0f} s of tries"
        )

    def _lock(self, token: str, deadline: float) -> None:
        """Take the commit lock, waiting while another commit holds it."""
        lock = self._key("commit-lock")
        while not self._client.execute_command("SET", lock, token, "NX", "PX", _LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"{self!r}: the commit lock stayed taken for {_COMMIT_PATIENCE:.0f} s"
                )
            time.sleep(random.uniform(0.0005, 0.002))

    def _unlock(self, token: str) -> None:
        """Release the commit lock if this commit still holds it (it expires otherwise)."""
        with contextlib.suppress(valkey.ValkeyError):  # if gone, the lock expires by itself
            self._client.execute_command("EVAL", _UNLOCK, 1, self._key("commit-lock"), token)

    def _transaction(
        self, pipe: _Pipeline, commit: StateCommit, writes: _Writes, token: str
    ) -> bool:
        """Apply ``commit`` unless it is in already; True if the transaction ran (and
        released the commit lock ``token`` holds)."""
        meta, users, sizes = self._key("meta"), self._key("users"), self._key("sizes")
        members = self._key("members", "")
        pipe.watch(meta)  # every commit writes it: what is read below holds until EXEC
        dense, erased = writes.dense, [p.dense for p in writes.erased]
        with self._pipeline(transaction=False) as reads:
            reads.execute_command("HMGET", meta, "commit", "commits", "lines")
            if commit.base:
                reads.execute_command("HMGET", self._key("positions"), *commit.base)
            if len(dense):
                low, high = int(dense.min()) >> 3, int(dense.max()) >> 3
                reads.execute_command("GETRANGE", users, low, high)
            if erased:
                reads.execute_command("HKEYS", sizes)
            for segment_id, rewrite in writes.patches.items():
                reads.execute_command("GETRANGE", members + segment_id, rewrite.low, rewrite.high)
            replies = reads.execute()
        if writes.patches:
            ranges = replies[-len(writes.patches) :]
            del replies[-len(writes.patches) :]
        last, commits, lines = replies.pop(0)
        if last is not None and int(last) == commit.id:
            return False  # applied already (its reply was lost)
        if commit.base:
            stored = zip(commit.base, replies.pop(0), strict=True)
            check_base(commit, {p: int(o) for p, o in stored if o is not None})
        new, first, patch = _new_users(writes, replies[0]) if len(dense) else ([], 0, b"")
        leaving = self._holding(erased, [s.decode() for s in replies[-1]]) if erased else {}
        touched = {segment_id for segment_id, _ in writes.flips}
        touched.update(writes.patches)
        seq, line = int(commits or 0) + 1, int(lines or 0) + len(commit.changes)
        pipe.multi()
        if erased:
            profiles = (p.user_id for p in writes.erased)
            pipe.execute_command("HDEL", self._key("profiles"), *profiles)
            for d in erased:
                pipe.execute_command("HDEL", self._name_key(d), d & _NAME_MASK)
            for args in _bitfields(erased, b"0"):
                pipe.execute_command("BITFIELD", users, *args)
            for segment_id, ids in leaving.items():
                for args in _bitfields(ids, b"0"):
                    pipe.execute_command("BITFIELD", members + segment_id, *args)
            touched.update(leaving)
        for segment_id in commit.dropped:
            pipe.execute_command("DEL", members + segment_id)
            pipe.execute_command("HDEL", sizes, segment_id)
        for segment_id, (bitmap, count) in writes.replaced.items():
            pipe.execute_command("SET", members + segment_id, bitmap)
            pipe.execute_command("HSET", sizes, segment_id, count)
        for segment_id, calls in writes.flips:
            for args in calls:
                pipe.execute_command("BITFIELD", members + segment_id, *args)
        if writes.patches:
            gone = np.asarray(erased, np.int64)
            for (segment_id, rewrite), stored in zip(writes.patches.items(), ranges, strict=True):
                content = rewrite.apply(stored, gone)
                pipe.execute_command("SETRANGE", members + segment_id, rewrite.low, content)
        if recount := sorted(touched.difference(commit.dropped)):
            pipe.execute_command("EVAL", _RECOUNT, 1, sizes, members, *recount)
        for i in range(0, len(writes.profiles), _HSET_ARGS):
            pipe.execute_command(
                "HSET", self._key("profiles"), *writes.profiles[i : i + _HSET_ARGS]
            )
        for bucket, group in itertools.groupby(new, key=lambda n: n[0] >> _NAME_BITS):
            names = [x for d, user_id in group for x in (b"%d" % (d & _NAME_MASK), user_id)]
            pipe.execute_command("HSET", self._key("names", str(bucket)), *names)
        if new:
            pipe.execute_command("SETRANGE", users, first, patch)
        if commit.positions:
            positions = [x for item in commit.positions.items() for x in item]
            pipe.execute_command("HSET", self._key("positions"), *positions)
        entry = msgspec.msgpack.encode((commit.positions, commit.now))
        pipe.execute_command("HSET", self._key("journal"), seq, entry)
        if commit.changes:
            blob = encode_block(commit.changes)
            pipe.execute_command("XADD", self._key("changes"), f"{line}-0", "lines", blob)
        pipe.execute_command("HSET", meta, "commit", commit.id, "commits", seq, "lines", line)
        pipe.execute_command("HINCRBY", meta, "applied", commit.applied)
        pipe.execute_command("EVAL", _UNLOCK, 1, self._key("commit-lock"), token)
        pipe.execute()
        return True

    def _holding(self, dense: list[int], segments: list[str]) -> dict[str, list[int]]:
        """The segments with members among ``dense``, and those members."""
        calls = _bitfields(dense, None)
        with self._pipeline(transaction=False) as reads:
            for segment_id in segments:
                for args in calls:
                    reads.execute_command("BITFIELD_RO", self._key("members", segment_id), *args)
            replies = iter(reads.execute())
        holding = {
            segment_id: list(
                itertools.compress(dense, itertools.chain(*(next(replies) for _ in calls)))
            )
            for segment_id in segments
        }
        return {segment_id: ids for segment_id, ids in holding.items() if ids}

    def positions(self) -> dict[int, int]:
        stored = self._call("HGETALL", self._key("positions"))
        return {int(p): int(o) for p, o in stored.items()}

    def journal(self) -> list[JournalEntry]:
        stored = self._call("HGETALL", self._key("journal"))
        entries = sorted((int(seq), _journal_decoder.decode(blob)) for seq, blob in stored.items())
        return [JournalEntry(positions, now) for _, (positions, now) in entries]

    def prune_journal(self, positions: Mapping[int, int]) -> None:
        key = self._key("journal")
        covered = [
            seq
            for seq, blob in self._call("HGETALL", key).items()
            if all(o <= positions.get(p, 0) for p, o in _journal_decoder.decode(blob)[0].items())
        ]
        if covered:
            self._call("HDEL", key, *covered)

    # -- readers ----------------------------------------------------------------------

    def profile(self, user_id: str) -> bytes | None:
        stored = self._call("HGET", self._key("profiles"), user_id)
        return None if stored is None else bytes(stored.partition(b":")[2])

    def user_segments(self, user_id: str) -> list[str]:
        keys = (self._key("profiles"), self._key("sizes"))
        found = self._call("EVAL", _USER_SEGMENTS, 2, *keys, self._key("members", ""), user_id)
        return sorted(s.decode() for s in found)

    def members(
        self, segment_id: str, after: int | None, limit: int
    ) -> tuple[list[str], int | None]:
        start = 0 if after is None else after + 1
        key = self._key("members", segment_id)
        found: list[int] = []
        chunk, span = start >> 16, 8  # read 8 containers' bytes, then twice as many
        while len(found) <= limit:
            data = self._call("GETRANGE", key, chunk * _CONTAINER, (chunk + span) * _CONTAINER - 1)
            ids = _bitmap(data, chunk).iter_equal_or_larger(start)
            found.extend(itertools.islice(ids, limit + 1 - len(found)))
            if len(data) < span * _CONTAINER:
                break
            chunk, span = chunk + span, min(span * 2, 128)
        page = found[:limit]
        names = self._names(page)
        cursor = page[-1] if len(found) > limit else None
        return [names[d] for d in page if d in names], cursor

    def _names(self, dense: Sequence[int]) -> dict[int, str]:
        """User ids of dense ids (of those with a profile), ``dense`` in ascending order."""
        buckets = [list(g) for _, g in itertools.groupby(dense, key=lambda d: d >> _NAME_BITS)]
        with self._errors(), self._pipeline(transaction=False) as pipe:
            for group in buckets:
                fields = (d & _NAME_MASK for d in group)
                pipe.execute_command("HMGET", self._name_key(group[0]), *fields)
            replies = pipe.execute()
        return {
            d: name.decode()
            for group, names in zip(buckets, replies, strict=True)
            for d, name in zip(group, names, strict=True)
            if name is not None
        }

    def bitmap(self, segment_id: str) -> BitMap:
        return _bitmap(self._call("GET", self._key("members", segment_id)) or b"")

    def users(self, after: int = -1) -> BitMap:
        chunk = (after + 1) >> 16
        found = _bitmap(self._call("GETRANGE", self._key("users"), chunk * _CONTAINER, -1), chunk)
        found.remove_range(0, after + 1)
        return found

    def sizes(self) -> dict[str, int]:
        return {s.decode(): int(n) for s, n in self._call("HGETALL", self._key("sizes")).items()}

    def applied(self) -> int:
        return int(self._call("HGET", self._key("meta"), "applied") or 0)

    def change_blocks_since(
        self, sequence: int, limit: int = 10_000
    ) -> list[tuple[int, ChangeBlock]]:
        def fetch(after: int) -> list[tuple[int, bytes]]:
            key = self._key("changes")
            entries = self._call("XRANGE", key, after + 1, "+", "COUNT", BLOCKS_PER_READ)
            return [(int(entry_id.split(b"-")[0]), f[b"lines"]) for entry_id, f in entries]

        return read_blocks(fetch, sequence, limit)

    def last_change(self) -> int:
        return int(self._call("HGET", self._key("meta"), "lines") or 0)

    def trim_changes(self, through: int) -> None:
        key = self._key("changes")
        newest = self._call("XREVRANGE", key, "+", "-", "COUNT", 1)
        if newest:
            last = int(newest[0][0].split(b"-")[0])
            self._call("XTRIM", key, "MINID", f"{min(through + 1, last)}-0")

    def marker(self, name: str) -> int:
        return int(self._call("HGET", self._key("markers"), name) or 0)

    def set_marker(self, name: str, value: int) -> None:
        self._call("HSET", self._key("markers"), name, value)

    # -- requests ---------------------------------------------------------------------

    def submit(self, kind: str, payload: bytes, partition: int | None = None) -> str:
        request_id = secrets.token_hex(12)
        queue = self._queue(partition)
        keys = (self._key("request", request_id), queue, self._key("requests"))
        self._call("EVAL", _SUBMIT, 3, *keys, request_id, kind, payload)
        return request_id

    def _queue(self, partition: int | None) -> str:
        """The sorted set of a partition's unanswered requests (or of unaddressed ones)."""
        return self._key("pending") if partition is None else self._key("pending", str(partition))

    def pending(
        self, limit: int = 16, partitions: Collection[int] | None = None
    ) -> list[tuple[str, str, bytes]]:
        queues = [None] if partitions is None else sorted(partitions)
        with self._errors(), self._pipeline(transaction=False) as pipe:
            for partition in queues:
                pipe.execute_command("ZRANGE", self._queue(partition), 0, limit - 1, "WITHSCORES")
            replies = pipe.execute()
        queued = [
            (float(score), request_id.decode())
            for reply in replies
            for request_id, score in zip(reply[::2], reply[1::2], strict=True)
        ]
        ids = [request_id for _, request_id in sorted(queued)[:limit]]
        with self._errors(), self._pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.execute_command("HMGET", self._key("request", request_id), "kind", "payload")
            replies = pipe.execute()
        return [
            (request_id, kind.decode(), bytes(payload))
            for request_id, (kind, payload) in zip(ids, replies, strict=True)
            if kind is not None
        ]

    def respond(self, request_id: str, response: bytes) -> None:
        keys = (self._key("request", request_id), self._key("pending"))
        self._call("EVAL", _RESPOND, 2, *keys, response, _ANSWER_TTL, request_id)

    def response(self, request_id: str) -> bytes | None:
        answer = self._call("HGET", self._key("request", request_id), "response")
        return None if answer is None else bytes(answer)

    def close(self) -> None:
        self._client.close()
