"""Publish the membership-change log to the ``membership-changes`` topic.

The state store's change log is the source of truth (it is written in the same commit as
the membership itself); the relay copies its lines to the bus after each commit and keeps
the number of the last line it published as a store marker. After a crash it resumes from
the marker, so every change reaches the topic at least once (lines published just before
a crash, whose marker was not yet stored, are published again).

A cold start can make a dozen changes per event, and each message costs a microsecond or
so of Python to encode and hand to the client: :class:`RelayProcess` runs the relay in a
process of its own, so that work takes another core rather than the processor's.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import msgspec

from audience_manager.bus.base import BusError, EventBus
from audience_manager.store import ChangeBlock, ChangeRecord, StateStore, StoreUnavailable
from audience_manager.store.base import CHANGE_KINDS

__all__ = [
    "CHANGES",
    "RELAYED",
    "ChangeRelay",
    "OpenPorts",
    "RelayProcess",
    "change_message",
    "change_messages",
    "change_values",
    "run_relay",
]

CHANGES = "membership-changes"
#: The store marker holding the number of the last line published.
RELAYED = "relayed-changes"
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


class _Message(msgspec.Struct, rename="camel", gc=False):
    segment_id: str
    user_id: str
    change: str
    at: int
    sequence: int


_encoder = msgspec.json.Encoder()


def change_message(sequence: int, line: ChangeRecord) -> bytes:
    """The topic's value for one change line (``drop``: a segment's members all left;
    ``erase``: a user was erased everywhere)."""
    return _encoder.encode(_Message(line.segment_id, line.user_id, line.change, line.at, sequence))


def change_messages(first: int, block: ChangeBlock) -> list[tuple[str, bytes]]:
    """The topic's records for a block of lines numbered from ``first``: the same bytes as
    :func:`change_message` gives."""
    return list(zip(block.user_ids, change_values(first, block), strict=True))


def change_values(first: int, block: ChangeBlock) -> list[bytes]:
    """The topic's values for a block of lines numbered from ``first`` (its keys are the
    block's user ids), put together from pieces encoded once per block."""
    if not len(block):
        return []
    heads = [b'{"segmentId":%b,"userId":' % _encoder.encode(s) for s in block.segments]
    kinds = [b',"change":"%b","at":' % k.encode() for k in CHANGE_KINDS]
    # One JSON string per line: JSON never holds a raw newline.
    users = _encoder.encode_lines(block.user_ids).split(b"\n")[:-1]
    return [
        b'%b%b%b%d,"sequence":%d}' % (heads[s], user, kinds[k], at, n)
        for s, user, k, at, n in zip(
            block.segment.tolist(),
            users,
            block.kind.tolist(),
            block.at.tolist(),
            range(first, first + len(block)),
            strict=True,
        )
    ]


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
        """Publish every line after the marker; returns how many were published."""
        published = 0
        while True:
            blocks = self.store.change_blocks_since(self.position, page)
            if not blocks:
                return published
            keys: list[str] = []
            values: list[bytes] = []
            for first, block in blocks:
                keys += block.user_ids
                values += change_values(first, block)
            self.bus.publish_many(self.topic, keys, values)  # durable once it returns
            first, block = blocks[-1]
            self.position = first + len(block) - 1
            self.store.set_marker(RELAYED, self.position)
            published += len(keys)


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
