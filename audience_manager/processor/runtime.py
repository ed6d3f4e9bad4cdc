"""The processor: poll the event log, apply the engine, commit state with positions.

One loop step polls a batch, applies it, and commits the read model together with the
positions consumed and a journal entry. The commit runs on a writer thread while the next
batch is polled and applied (the database does its work without holding the GIL); a step
waits for it before anything else writes to the store, before a snapshot, and before the
next commit, so commits land one at a time and in order. Time advances every step, so
window exits fire on time even without events. Snapshots bound recovery: on start the
newest snapshot is restored and the log replayed from its positions; batches already
committed are replayed at their journaled engine time and write nothing
(``docs/architecture.md``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from audience_manager.bus.base import Consumer, EventBus, Record
from audience_manager.catalog.errors import CatalogUnavailable
from audience_manager.catalog.watch import CatalogWatcher
from audience_manager.engine import Engine, Event, MembershipChange
from audience_manager.engine.snapshot import latest_snapshot, load_snapshot, save_snapshot
from audience_manager.processor.codec import ERASE, dead_letter, decode
from audience_manager.processor.definitions import DefinitionSync
from audience_manager.processor.projection import build_commit
from audience_manager.processor.relay import CHANGES, ChangeRelay
from audience_manager.processor.requests import answer_requests
from audience_manager.store import StateCommit, StateStore

__all__ = ["EVENTS", "Processor", "ProcessorConfig"]

EVENTS = "events"
DEAD_LETTER = "dead-letter"
#: Seconds a replay waits for records the journal says the log has: a broker's first
#: fetch after an assignment takes a while, so an empty poll does not mean the end.
REPLAY_WAIT = 10.0
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """How the loop batches and how often it snapshots."""

    group: str = "processor"
    max_batch: int = 20_000
    poll_timeout: float = 0.05
    snapshot_every: float = 60.0
    snapshots: Path = field(default=Path(".data/state/snapshots"))
    #: Where the membership-change log is published (None: not published).
    changes_topic: str | None = CHANGES


class Processor:
    """Applies accepted events to the engine and commits the results.

    Definitions are synced with the catalog when ``watcher`` says it may have changed.
    """

    def __init__(
        self,
        bus: EventBus,
        store: StateStore,
        definitions: DefinitionSync,
        config: ProcessorConfig,
        watcher: CatalogWatcher,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.bus = bus
        self.store = store
        self.definitions = definitions
        self.config = config
        self.watcher = watcher
        self.clock = clock
        self.engine = Engine(clock)
        self.consumer: Consumer = bus.consumer(EVENTS, config.group)
        self.positions: dict[int, int] = {}
        self.seen_messages: dict[str, None] = {}  # recent messageIds, oldest first
        self._last_snapshot = time.monotonic()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._inflight: tuple[Future[None], dict[int, int]] | None = None
        self.relay = ChangeRelay(store, bus, config.changes_topic) if config.changes_topic else None

    # -- lifecycle --------------------------------------------------------------------

    def recover(self) -> None:
        """Restore the newest snapshot and replay what the store already committed."""
        path = latest_snapshot(self.config.snapshots)
        if path is not None:
            snapshot = load_snapshot(path, self.clock)
            self.engine = snapshot.engine
            self.positions = dict(snapshot.positions)
            self.seen_messages = dict.fromkeys(snapshot.meta.get("messages", []))
            self.definitions.restore(snapshot.meta.get("definitions", {}))
        self.consumer.assign(None)
        start = {p: self.positions.get(p, 0) for p in range(self.bus.partitions)}
        beginning = self.bus.beginning_offsets(EVENTS)
        self.consumer.seek({p: max(o, beginning.get(p, 0)) for p, o in start.items()})
        self.positions = dict(start)
        ahead: list[Record] = []  # read past a batch: the next batch's, or the loop's
        for entry in self.store.journal():
            if all(entry.positions.get(p, 0) <= o for p, o in self.positions.items()):
                continue  # the snapshot already includes this batch
            ahead = self._replay_until(entry.positions, entry.now, ahead)
        if ahead:  # one seek back, so the loop reads them
            first: dict[int, int] = {}
            for record in ahead:
                first.setdefault(record.partition, record.offset)
            self.consumer.seek(first)
        self._sync_definitions(force=True)
        self._relay()  # lines committed before a stop or crash

    def _replay_until(self, target: dict[int, int], now: int, ahead: list[Record]) -> list[Record]:
        """Re-apply the records up to ``target`` as one batch at engine time ``now``, taking
        ``ahead`` (records read already) before polling; returns the records read past it.

        The batch is gathered whole before it is applied, so it is the very batch the
        journal recorded, whatever the polls return: the engine ends up exactly as it was.
        Records past it are kept rather than sought back to: a seek costs a broker's fetch.
        """
        batch: list[Record] = []
        beyond: list[Record] = []
        reached = dict(self.positions)
        while any(reached.get(p, 0) < o for p, o in target.items()):
            records = ahead or self.consumer.poll(self.config.max_batch, REPLAY_WAIT)
            ahead = []
            if not records:
                raise RuntimeError(f"the log ends before committed positions {target}")
            for record in records:
                if record.offset < target.get(record.partition, 0):
                    batch.append(record)
                    reached[record.partition] = record.offset + 1
                else:
                    beyond.append(record)
        self._apply(batch, now, commit=False)
        return ahead + beyond

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set, then snapshot."""
        try:
            self.recover()
            while not stop.is_set():
                self.step()
            self.snapshot()
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the commit in flight (if any) and stop the writer thread."""
        try:
            self._settle()
        finally:
            self._writer.shutdown()

    def step(self) -> int:
        """Poll, apply and commit one batch (or just let time pass); returns events applied."""
        if self.watcher.changed() and self._outdated():
            self._settle()
            self._sync_definitions()
        if self.store.pending(limit=1):
            self._settle()
            if answer_requests(self.engine, self.store, self.positions, self.history):
                self.snapshot()  # members changed outside the log: a replay must not cross it
                self._relay()
        records = self.consumer.poll(self.config.max_batch, self.config.poll_timeout)
        applied = self._apply(records, self.clock(), commit=True)
        if time.monotonic() - self._last_snapshot >= self.config.snapshot_every:
            self.snapshot()
        return applied

    def _outdated(self) -> bool:
        """True when the catalog moved on since the last sync (or cannot be asked)."""
        try:
            return self.definitions.outdated()
        except CatalogUnavailable:
            return True  # the sync logs it and the watcher says when to try again

    def _sync_definitions(self, force: bool = False) -> None:
        try:
            changed = self.definitions.sync(self.engine, self.store, self.positions, force=force)
        except CatalogUnavailable as exc:
            if force:
                raise
            # Events go on being processed; the watcher says when to try again.
            log.warning("catalog unavailable, definitions not synced: %s", exc)
            return
        # A snapshot right after a change keeps replays from ever crossing one.
        if changed:
            self.snapshot()
            self._relay()

    def _relay(self) -> None:
        """Publish change lines committed outside the writer thread (it is idle now)."""
        if self.relay is not None:
            self.relay.relay()

    def history(self) -> Iterator[list[Event]]:
        """The retained events already applied, in batches (for new aggregates)."""
        reader = self.bus.consumer(EVENTS, self.config.group + "-history")
        reader.assign(None)
        reader.seek(self.bus.beginning_offsets(EVENTS))
        try:
            while True:
                records = [
                    r
                    for r in reader.poll(self.config.max_batch, 0.0)
                    if r.offset < self.positions.get(r.partition, 0)
                ]
                if not records:
                    if all(reader.positions().get(p, 0) >= o for p, o in self.positions.items()):
                        return
                    continue
                yield [i.event for i in decode(records).items if i.event is not None]
        finally:
            reader.close()

    def snapshot(self) -> None:
        """Write a snapshot of the engine at the current positions; prune the journal."""
        self._settle()
        meta = {"messages": list(self.seen_messages), "definitions": self.definitions.state()}
        save_snapshot(self.config.snapshots, self.engine, self.positions, meta)
        self.store.prune_journal(self.positions)
        self._last_snapshot = time.monotonic()

    # -- applying ---------------------------------------------------------------------

    def _apply(self, records: list[Record], now: int, *, commit: bool) -> int:
        # One fixed order, whatever the polls interleaved: a replay of the same records
        # then assigns the same dense user ids as the first run did.
        records = sorted(records, key=lambda r: (r.partition, r.offset))
        batch = decode(records)
        changes: list[MembershipChange] = []
        users: set[str] = set()
        erased: list[tuple[int, str]] = []
        poison = list(batch.poison)
        pending: list[Event] = []

        def flush() -> None:
            if pending:
                result = self.engine.apply(pending, now=now)
                changes.extend(result.changes)
                users.update(e.user_id for e in pending)
                for rejection in result.rejected:
                    event = pending[rejection.index]
                    poison.append((event.user_id, dead_letter(event, rejection.reason)))
                pending.clear()

        for item in batch.items:
            if item.command == ERASE:
                flush()  # the user's earlier events first, then the erasure
                dense = self.engine.ids.get(item.user_id)
                if dense is not None:
                    changes.extend(self.engine.delete_user(item.user_id))
                    erased.append((dense, item.user_id))
                    users.discard(item.user_id)
            elif item.event is not None and not self._duplicate(item.event):
                pending.append(item.event)
        flush()
        changes.extend(self.engine.advance(now))
        users.update(self.engine.drain_expired())
        for record in records:
            self.positions[record.partition] = record.offset + 1
        if commit and (records or changes):
            state = build_commit(self.engine, self.positions, changes, users, erased, len(records))
            self._settle()
            future = self._writer.submit(self._write, state, poison)
            self._inflight = (future, dict(self.positions))
        elif commit:
            self._settle()  # idle: nothing to overlap with
        return len(records)

    def _write(self, state: StateCommit, poison: list[tuple[str, bytes]]) -> None:
        """On the writer thread: commit, then publish dead letters and the new changes."""
        self.store.commit(state)
        if poison:
            self.bus.publish(DEAD_LETTER, poison)
        self._relay()

    def _settle(self) -> None:
        """Wait for the commit in flight; then store the group's positions in the log."""
        if self._inflight is None:
            return
        future, positions = self._inflight
        self._inflight = None
        future.result()  # a failed commit raises here (StoreUnavailable: the loop restarts)
        # Group positions in the log: for lag monitoring and so retention may delete.
        self.consumer.commit(positions)

    def _duplicate(self, event: Event) -> bool:
        """True for a messageId seen before (the last million are remembered)."""
        message_id = event.message_id
        if message_id is None:
            return False
        key = f"{event.user_id}\x00{message_id}"
        if key in self.seen_messages:
            return True
        self.seen_messages[key] = None
        if len(self.seen_messages) > 1_000_000:
            del self.seen_messages[next(iter(self.seen_messages))]
        return False
