"""Publish the membership-change log to the ``membership-changes`` topic.

The state store's change log is the source of truth (it is written in the same commit as
the membership itself); the relay copies its lines to the bus after each commit and keeps
the number of the last line it published as a store marker. After a crash it resumes from
the marker, so every change reaches the topic at least once (lines published just before
a crash, whose marker was not yet stored, are published again).

A cold start can make a dozen changes per event. Each message carries one user's lines
(see :func:`change_messages`), and :class:`RelayProcess` runs the relay in a process of its
own, so encoding and handing them to the client takes another core rather than the
processor's.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import msgspec
import numpy as np
import numpy.typing as npt

from audience_manager.bus.base import BusError, EventBus
from audience_manager.store import ChangeBlock, StateStore, StoreUnavailable
from audience_manager.store.base import CHANGE_KINDS

__all__ = [
    "CHANGES",
    "CHANGES_PER_MESSAGE",
    "RELAYED",
    "ChangeRelay",
    "OpenPorts",
    "RelayProcess",
    "change_messages",
    "run_relay",
]

CHANGES = "membership-changes"
#: The store marker holding the number of the last line published.
RELAYED = "relayed-changes"
#: The most change lines one message carries (a user with more gets several messages).
CHANGES_PER_MESSAGE = 500
#: Opens the bus and the store in a relay process (picklable: it crosses a spawn).
OpenPorts = Callable[[], tuple[EventBus, StateStore]]
#: How often a relay process looks for lines nobody told it about (another processor's).
IDLE_CHECK = 0.1
#: The least time between two starts of a relay process that keeps dying (seconds).
RESTART_PAUSE = 2.0
#: How long stopping a relay process waits for it to publish what is committed.
STOP_WAIT = 30.0
#: Seconds between attempts while the bus or the store is unavailable (doubling).
FIRST_RETRY, LAST_RETRY = 0.5, 5.0
_WAKE, _STOP = b"w", b"s"
log = logging.getLogger(__name__)


_encoder = msgspec.json.Encoder()
_KINDS = [kind.encode() for kind in CHANGE_KINDS]
#: Line numbers are written as a higher part and three digits from a table (000 to 999,
#: or 0 to 999 when there is no higher part), not one number at a time.
_THOUSAND = 1000
_LOW = [b"%03d" % n for n in range(_THOUSAND)] + [b"%d" % n for n in range(_THOUSAND)]
_LOW_PIECES = np.array(_LOW, dtype=object)
_LOW_SIZES = np.array([len(piece) for piece in _LOW], dtype=np.int64)
#: About how many bytes of messages are joined at once: a larger buffer costs more to
#: allocate than to fill.
_CHUNK = 1 << 20


def change_messages(blocks: Sequence[tuple[int, ChangeBlock]]) -> tuple[list[str], list[bytes]]:
    """The topic's keys and values for blocks of lines, each numbered from its ``first``.

    One message per user (key: the user id), its lines in log order::

        {"userId": "u1", "changes": [{"segmentId": "s1", "change": "enter",
                                      "at": 1700000000000, "sequence": 17}, ...]}

    (``drop``: a segment's members all left, user ""; ``erase``: a user was erased
    everywhere, segment ""). A user with more than ``CHANGES_PER_MESSAGE`` lines gets
    several messages, in order. A cold start makes a dozen changes per event: a message per
    user rather than per line makes about a tenth as many messages to hand to the client,
    store on the broker and read.

    Lines are grouped by dense id, which names one user and is never given to another
    (a user erased and seen again gets a larger one, so its messages stay in log order);
    ``drop`` lines have none (-1). Should a user's line come without its id (-1), the
    lines are grouped by user id instead, users in the order they first appear.
    Each line is three pieces, the text up to ``"sequence":`` (one per segment, change and
    time) and two for the number, all taken from tables by array indexing; the messages
    are then cut from their joined pieces.
    """
    blocks = [(first, block) for first, block in blocks if len(block)]
    if not blocks:
        return [], []
    heads: list[bytes] = []  # '},{"segmentId":…,"sequence":' by segment, change and time
    codes: list[npt.NDArray[np.int64]] = []
    users: list[str] = []
    for _, block in blocks:
        at = block.at
        if (at == at[0]).all():  # the usual block: one commit, one time
            times, time_code = at[:1], np.zeros(len(block), np.int64)
        else:
            times, time_code = np.unique(at, return_inverse=True)
        quoted = [_encoder.encode(segment) for segment in block.segments]
        segment_code = time_code * len(quoted) + block.segment
        codes.append(len(heads) + segment_code * len(_KINDS) + block.kind)
        heads.extend(
            b'},{"segmentId":%b,"change":"%b","at":%d,"sequence":' % (segment, kind, time)
            for time in times.tolist()
            for segment in quoted
            for kind in _KINDS
        )
        users.extend(block.user_ids)
    group = np.concatenate([block.dense for _, block in blocks])
    count = len(group)
    if any(users[line] for line in np.flatnonzero(group < 0).tolist()):
        first_seen: dict[str, int] = {}
        group = np.fromiter(
            (first_seen.setdefault(user, len(first_seen)) for user in users), np.int64, count
        )
    order = np.argsort(group, kind="stable")  # each user's lines together, in log order
    head = np.concatenate(codes)[order]
    high, low = np.divmod(np.arange(blocks[0][0], blocks[0][0] + count)[order], _THOUSAND)
    low += _THOUSAND * (high == 0)
    lowest = int(high.min())
    highs = [b"%d" % n if n else b"" for n in range(lowest, int(high.max()) + 1)]
    high -= lowest
    # A message starts at a user's first line and after every CHANGES_PER_MESSAGE.
    sorted_group = group[order]
    new_user = np.ones(count, bool)
    np.not_equal(sorted_group[1:], sorted_group[:-1], out=new_user[1:])
    user_starts = np.flatnonzero(new_user)
    rank = np.arange(count) - np.repeat(user_starts, np.diff(user_starts, append=count))
    starts = np.flatnonzero(rank % CHANGES_PER_MESSAGE == 0)
    ends = np.append(starts[1:], count) - 1
    keys = [users[line] for line in order[starts].tolist()]
    openings = [
        b'{"userId":%b,"changes":[' % quoted
        for quoted in _encoder.encode_lines(keys).split(b"\n")[:-1]  # JSON holds no raw newline
    ]
    pieces = np.empty((count, 3), dtype=object)
    pieces[:, 0] = np.array(heads, dtype=object)[head]
    pieces[:, 1] = np.array(highs, dtype=object)[high]
    pieces[:, 2] = _LOW_PIECES[low]
    # A message's first line opens it (no "},"), its last closes it.
    firsts = pieces[starts, 0].tolist()
    pieces[starts, 0] = [start + line[2:] for start, line in zip(openings, firsts, strict=True)]
    pieces[ends, 2] = [last + b"}]}" for last in pieces[ends, 2].tolist()]
    sizes = np.array([len(piece) for piece in heads], np.int64)[head]
    sizes += np.array([len(piece) for piece in highs], np.int64)[high]
    sizes += _LOW_SIZES[low]
    sizes[starts] += np.array([len(opening) for opening in openings], np.int64) - 2
    sizes[ends] += 3
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    flat = pieces.ravel().tolist()
    bounds = np.append(starts, count)
    per_chunk = max(1, len(starts) * _CHUNK // int(offsets[-1]))
    values: list[bytes] = []
    for chunk_start in range(0, len(starts), per_chunk):
        lines = bounds[chunk_start : chunk_start + per_chunk + 1]
        joined = b"".join(flat[3 * int(lines[0]) : 3 * int(lines[-1])])
        cuts = (offsets[lines] - offsets[lines[0]]).tolist()
        values.extend([joined[a:b] for a, b in itertools.pairwise(cuts)])
    return keys, values


class ChangeRelay:
    """Copies new change-log lines to the topic; used by one thread at a time."""

    def __init__(self, store: StateStore, bus: EventBus, topic: str = CHANGES) -> None:
        self.store = store
        self.bus = bus
        self.topic = topic
        self.position = store.marker(RELAYED)

    def resume(self) -> None:
        """Carry on from the stored marker (another relay may have moved it)."""
        self.position = self.store.marker(RELAYED)

    def pause(self) -> None:
        """Nothing to let go of: lines are published by the caller's own ``relay`` calls."""

    def relay(self, page: int = 500_000) -> int:
        """Publish every line after the marker; returns how many lines were published."""
        published = 0
        while True:
            blocks = self.store.change_blocks_since(self.position, page)
            if not blocks:
                return published
            keys, values = change_messages(blocks)
            self.bus.publish_many(self.topic, keys, values)  # durable once it returns
            first, block = blocks[-1]
            self.position = first + len(block) - 1
            self.store.set_marker(RELAYED, self.position)
            published += sum(len(block) for _, block in blocks)


class RelayProcess:
    """A :class:`ChangeRelay` in a child process, woken after each commit.

    The child opens its own bus and store (``open_ports``), publishes every line after the
    marker, then waits to be woken (or ``IDLE_CHECK`` s, for lines other processors
    commit). It retries while a backend is unavailable, exits once its parent is gone, and
    on ``pause`` publishes what is committed before it exits. A child that died is started
    again at the next wake-up; the marker says where to carry on.

    Wake-ups and the stop go down a pipe, one byte each, never blocking the processor: a
    child killed while it waits cannot leave a lock or condition held.
    """

    def __init__(self, open_ports: OpenPorts, topic: str = CHANGES) -> None:
        self.open_ports = open_ports
        self.topic = topic
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._signals: Connection | None = None  # the write end of the child's pipe
        self._started = 0.0  # when the last child was started (monotonic)

    @property
    def process(self) -> BaseProcess | None:
        """The child, once started (it may have exited since)."""
        return self._process

    def relay(self) -> None:
        """Have the lines committed so far published (soon, by the child)."""
        if self._process is None or not self._process.is_alive():
            self.resume()
        self._signal(_WAKE)

    def resume(self) -> None:
        """Start the child unless it runs (one that died is started again, at most once
        every ``RESTART_PAUSE`` s, so a child that fails at once does not spin)."""
        if self._process is not None:
            if self._process.is_alive():
                return
            if time.monotonic() - self._started < RESTART_PAUSE:
                return  # a later wake-up starts it
            log.warning(
                "the change relay exited with %s; starting it again", self._process.exitcode
            )
            self._close_signals()
        self._started = time.monotonic()
        reader, writer = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=run_relay,
            args=(self.open_ports, self.topic, reader, os.getpid()),
            name="change-relay",
            daemon=True,
        )
        self._process.start()
        reader.close()  # the child's copy alone: its end of the pipe closes when it exits
        os.set_blocking(writer.fileno(), False)
        self._signals = writer

    def pause(self) -> None:
        """Stop the child once it has published the lines committed so far."""
        process, self._process = self._process, None
        if process is None:
            return
        self._signal(_STOP)
        process.join(STOP_WAIT)
        if process.is_alive():
            log.warning("the change relay did not stop within %.0f s; ending it", STOP_WAIT)
            process.kill()
            process.join()
        self._close_signals()

    def _signal(self, byte: bytes) -> None:
        if self._signals is None:
            return
        try:
            os.write(self._signals.fileno(), byte)
        except BlockingIOError:
            pass  # the pipe is full of wake-ups the child has yet to read
        except BrokenPipeError:
            pass  # the child is gone: the next wake-up starts another

    def _close_signals(self) -> None:
        if self._signals is not None:
            self._signals.close()
            self._signals = None


def run_relay(open_ports: OpenPorts, topic: str, signals: Connection, parent: int) -> None:
    """A relay process: publish new lines whenever woken, until stopped or orphaned
    (``parent`` is no longer its parent, or the other end of ``signals`` closed)."""
    bus, store = open_ports()
    relay: ChangeRelay | None = None
    delay = FIRST_RETRY
    stopping = False
    try:
        while True:
            try:
                relay = relay or ChangeRelay(store, bus, topic)  # reads the marker
                relay.relay()
                delay = FIRST_RETRY
            except (BusError, StoreUnavailable) as exc:  # BusError: a writer not gone yet
                if stopping:
                    log.warning("change relay stopped with lines unpublished: %s", exc)
                    return
                log.warning("change relay: retrying in %.1f s: %s", delay, exc)
                stopping = _stop_signalled(signals, delay)
                delay = min(delay * 2, LAST_RETRY)
                continue
            if stopping or os.getppid() != parent:
                return
            stopping = _stop_signalled(signals, IDLE_CHECK)
    finally:
        bus.close()
        store.close()


def _stop_signalled(signals: Connection, timeout: float) -> bool:
    """Wait up to ``timeout`` s for a signal; True if it says stop (or the parent is gone)."""
    if not signals.poll(timeout):
        return False
    try:
        received = os.read(signals.fileno(), 4096)
    except BlockingIOError:
        return False
    return received == b"" or _STOP in received
