"""The processor: poll the event log, apply the engine, commit state with positions.

Reading the whole log alone, a processor runs one :class:`Task` (one engine) over every
partition. Where processors share the partitions of a consumer group
(``EventBus.shares_partitions``), it runs one task per partition it holds: a partition it
gains is restored from that partition's snapshot and journal, one it loses is committed
and snapshotted first, and every commit is fenced by the positions it started from, so a
processor that lost a partition without noticing cannot apply a batch twice.

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

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from audience_manager.bus.base import Consumer, EventBus, Record
from audience_manager.catalog.errors import CatalogUnavailable
from audience_manager.catalog.service import CatalogService
from audience_manager.catalog.watch import CatalogWatcher
from audience_manager.engine import Engine, Event
from audience_manager.membership import IdSpace
from audience_manager.processor.definitions import DefinitionSync
from audience_manager.processor.projection import WHOLE_LOG, merge_commits
from audience_manager.processor.relay import CHANGES, RELAYED, ChangeRelay, OpenPorts, RelayProcess
from audience_manager.processor.requests import answer_requests
from audience_manager.processor.task import Task
from audience_manager.store import StateCommit, StateStore

__all__ = ["EVENTS", "Processor", "ProcessorConfig"]

EVENTS = "events"
DEAD_LETTER = "dead-letter"
#: How long a replay waits for records the journal says the log has (seconds).
REPLAY_PATIENCE = 30.0
log = logging.getLogger(__name__)
_LOG_ORDER = attrgetter("partition", "offset")
_PARTITION = attrgetter("partition")


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
    #: How many of the newest membership-change log lines the store keeps (older ones
    #: are trimmed at snapshots, once published); None keeps every line.
    changes_kept: int | None = 2_000_000


class Processor:
    """Applies accepted events to the engines of its tasks and commits the results.

    Definitions are synced with the catalog when ``watcher`` says it may have changed.
    With ``relay_ports`` (how to open the bus and the store again), membership changes
    are published by a process of their own rather than on the writer thread.
    """

    def __init__(
        self,
        bus: EventBus,
        store: StateStore,
        catalog: CatalogService,
        config: ProcessorConfig,
        watcher: CatalogWatcher,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
        relay_ports: OpenPorts | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.catalog = catalog
        self.config = config
        self.watcher = watcher
        self.clock = clock
        self.partitioned = bus.shares_partitions
        self.consumer: Consumer = bus.consumer(EVENTS, config.group)
        self.tasks: dict[int, Task] = {}  # partition -> the task holding it
        self._last_snapshot = time.monotonic()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._inflight: tuple[Future[None], dict[int, int]] | None = None
        self.relay: ChangeRelay | RelayProcess | None = None
        if config.changes_topic is not None:
            self.relay = (
                ChangeRelay(store, bus, config.changes_topic)
                if relay_ports is None
                else RelayProcess(relay_ports, config.changes_topic)
            )

    # -- tasks ------------------------------------------------------------------------

    def _task(self, partitions: tuple[int, ...], space: IdSpace, snapshots: Path) -> Task:
        shared = self.bus.partitions if space.stride > 1 else 1
        sync = DefinitionSync(self.catalog, space=space, partitions=shared)
        task = Task(partitions, space, sync, snapshots, self.clock)
        sync.history = lambda: self._history(task)
        sync.history_size = lambda: task.history_size(self.bus.beginning_offsets(EVENTS))
        return task

    def held(self) -> list[Task]:
        """The tasks this processor runs, each once."""
        return list({id(t): t for t in self.tasks.values()}.values())

    @property
    def engine(self) -> Engine:
        """The engine of a processor that reads the whole log (one task)."""
        (task,) = self.held()
        return task.engine

    @property
    def positions(self) -> dict[int, int]:
        """The next offset to apply of every partition held."""
        return {p: o for t in self.held() for p, o in t.positions.items()}

    # -- lifecycle --------------------------------------------------------------------

    def recover(self) -> None:
        """Start reading: the whole log from the newest snapshot and journal, or (sharing
        the partitions) as the group assigns them."""
        if self.partitioned:
            self.consumer.subscribe(on_assign=self._gained, on_revoke=self._lost)
        else:
            partitions = tuple(range(self.bus.partitions))
            task = self._task(partitions, WHOLE_LOG, self.config.snapshots)
            self.consumer.assign(None)
            self.consumer.seek(self._restore(task))
            self.tasks = dict.fromkeys(partitions, task)
            self._sync_definitions(task, force=True)
        self._relay()  # lines committed before a stop or crash

    def _restore(self, task: Task) -> dict[int, int]:
        """Bring a task to the store's state: its newest snapshot, then the journaled
        batches after it replayed (writing nothing); returns where to read on from."""
        task.restore()
        beginning = self.bus.beginning_offsets(EVENTS)
        start = {p: max(o, beginning.get(p, 0)) for p, o in task.positions.items()}
        task.positions.update(start)
        replay: Consumer | None = None
        ahead: list[Record] = []  # read past a batch: the next batch's
        try:
            for entry in self.store.journal():
                target = {p: o for p, o in entry.positions.items() if p in task.positions}
                if all(o <= task.positions[p] for p, o in target.items()):
                    continue  # the snapshot includes this batch (or it is not the task's)
                if replay is None:
                    replay = self.bus.consumer(EVENTS, self.config.group + "-replay")
                    replay.assign(list(task.partitions))
                    replay.seek(start)
                ahead = self._replay_until(replay, task, target, entry.now, ahead)
        finally:
            if replay is not None:
                replay.close()
        stored = self.store.positions()
        behind = {p: o for p, o in task.positions.items() if o < stored.get(p, 0)}
        if behind:
            raise RuntimeError(f"{task}: the journal ends before the stored positions {stored}")
        return dict(task.positions)

    def _replay_until(
        self, reader: Consumer, task: Task, target: dict[int, int], now: int, ahead: list[Record]
    ) -> list[Record]:
        """Re-apply the records up to ``target`` as one batch at engine time ``now``, taking
        ``ahead`` (records read already) before polling; returns the records read past it.

        The batch is gathered whole before it is applied, so it is the very batch the
        journal recorded, whatever the polls return: the engine ends up exactly as it was.
        Records past it are kept rather than sought back to: a seek costs a broker's fetch.
        """
        batch: list[Record] = []
        beyond: list[Record] = []
        reached = dict(task.positions)
        patience = time.monotonic() + REPLAY_PATIENCE
        while any(reached.get(p, 0) < o for p, o in target.items()):
            records = ahead or reader.poll(self.config.max_batch, self.config.poll_timeout)
            ahead = []
            if not records:
                if time.monotonic() > patience:  # a broker's first fetch may take a while
                    raise RuntimeError(f"the log ends before committed positions {target}")
                continue
            patience = time.monotonic() + REPLAY_PATIENCE
            for record in records:
                if record.offset < target.get(record.partition, 0):
                    batch.append(record)
                    reached[record.partition] = record.offset + 1
                else:
                    beyond.append(record)
        batch.sort(key=lambda r: (r.partition, r.offset))
        task.apply(batch, now)
        return ahead + beyond

    def _gained(self, partitions: list[int]) -> Mapping[int, int]:
        """The group gave this processor ``partitions``: restore a task for each."""
        self._settle()
        starts: dict[int, int] = {}
        for partition in partitions:
            space = IdSpace(self.bus.partitions, partition)
            task = self._task((partition,), space, self._snapshots(partition))
            starts.update(self._restore(task))
            self._sync_definitions(task, force=True)
            self.tasks[partition] = task
        if 0 in partitions and self.relay is not None:
            self.relay.resume()  # another processor may have published since
        log.info("partitions %s gained at %s", partitions, starts)
        return starts

    def _lost(self, partitions: list[int]) -> None:
        """The group takes ``partitions`` away: commit and snapshot their tasks, drop them."""
        self._settle()
        for partition in partitions:
            task = self.tasks.pop(partition, None)
            if task is not None:
                self._snapshot(task)
        if 0 in partitions and self.relay is not None:
            self.relay.pause()  # the next holder of partition 0 relays
        log.info("partitions %s handed back", partitions)

    def _snapshots(self, partition: int) -> Path:
        return self.config.snapshots / f"partition-{partition}"

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set, then snapshot."""
        try:
            self.recover()
            while not stop.is_set():
                self.step()
            self.snapshot()
            log.info("processor stopped at positions %s", self.positions)
        finally:
            # Snapshotted, or (after a failure) holding engines that may be ahead of the
            # store: either way nothing more is saved of them when the group takes the
            # partitions back.
            self.tasks.clear()
            self.close()

    def close(self) -> None:
        """Wait for the commit in flight (if any), stop the writer thread, leave the group."""
        try:
            self._settle()
        finally:
            self._writer.shutdown()
            if self.relay is not None:
                self.relay.pause()
            self.consumer.close()

    def step(self) -> int:
        """Poll, apply and commit one batch (or just let time pass); returns events applied."""
        if self.watcher.changed() and self._outdated():
            self._settle()
            for task in self.held():
                self._sync_definitions(task)
        addressed = sorted(self.tasks) if self.partitioned else None
        if addressed != [] and self.store.pending(limit=1, partitions=addressed):
            self._settle()
            if answer_requests(self.store, self._holder, self._history, addressed):
                self.snapshot()  # members changed outside the log: a replay must not cross it
                self._relay()
        records = self.consumer.poll(self.config.max_batch, self.config.poll_timeout)
        applied = self._apply(records, self.clock())
        if time.monotonic() - self._last_snapshot >= self.config.snapshot_every:
            self.snapshot()
        return applied

    def _holder(self, partition: int | None) -> Task | None:
        if not self.partitioned:
            return self.held()[0]
        return None if partition is None else self.tasks.get(partition)

    def _outdated(self) -> bool:
        """True when the catalog moved on since the last sync (or cannot be asked)."""
        try:
            revision = self.catalog.current_revision()  # one query, whatever the tasks
        except CatalogUnavailable:
            return True  # the sync logs it and the watcher says when to try again
        return any(task.definitions.revision != revision for task in self.held())

    def _sync_definitions(self, task: Task, force: bool = False) -> None:
        try:
            changed = task.definitions.sync(task.engine, self.store, task.positions, force=force)
        except CatalogUnavailable as exc:
            if force:
                raise
            # Events go on being processed; the watcher says when to try again.
            log.warning("catalog unavailable, definitions not synced: %s", exc)
            return
        # A snapshot right after a change keeps replays from ever crossing one.
        if changed:
            self._snapshot(task)
            self._relay()

    def _relay(self) -> None:
        """Publish change lines committed (on the writer thread, or outside it while it is
        idle). Where processors share the partitions, the holder of partition 0 does."""
        if self.relay is not None and (not self.partitioned or 0 in self.tasks):
            self.relay.relay()

    def _trim(self) -> None:
        """Forget change-log lines beyond the newest ``changes_kept`` once published."""
        kept = self.config.changes_kept
        if kept is None:
            return
        through = self.store.last_change() - kept
        if self.relay is not None:
            through = min(through, self.store.marker(RELAYED))
        if through > 0:
            self.store.trim_changes(through)

    def _history(self, task: Task) -> Iterator[list[Event]]:
        group = self.config.group + "-history"
        return task.history(self.bus, EVENTS, group, self.config.max_batch)

    def snapshot(self) -> None:
        """Snapshot every task at its current positions; prune the journal."""
        self._settle()
        for task in self.held():
            self._snapshot(task)
        self._trim()
        self._last_snapshot = time.monotonic()

    def _snapshot(self, task: Task) -> None:
        """Snapshot one task (its state is committed) and prune what no replay needs."""
        task.snapshot()
        if not self.partitioned:
            self.store.prune_journal(task.positions)
            return
        # A journal entry goes once the snapshots of all its partitions include it.
        for partition, position in task.positions.items():
            self.store.set_marker(f"snapshot:{partition}", position)
        covered = {p: self.store.marker(f"snapshot:{p}") for p in range(self.bus.partitions)}
        self.store.prune_journal(covered)

    # -- applying ---------------------------------------------------------------------

    def _apply(self, records: list[Record], now: int) -> int:
        # One fixed order, whatever the polls interleaved: a replay of the same records
        # then assigns the same dense user ids as the first run did.
        records = sorted(records, key=_LOG_ORDER)
        by_task: dict[int, list[Record]] = {id(t): [] for t in self.held()}
        for partition, run in itertools.groupby(records, key=_PARTITION):
            task = self.tasks.get(partition)
            if task is not None:  # not a partition just handed back
                start = task.positions[partition]
                by_task[id(task)].extend(r for r in run if r.offset >= start)
        commits: list[StateCommit] = []
        poison: list[tuple[str, bytes]] = []
        base: dict[int, int] = {}
        applied = 0
        for task in self.held():
            base.update(task.positions)
            outcome = task.apply(by_task[id(task)], now)
            applied += outcome.records
            poison.extend(outcome.poison)
            if outcome.records or outcome.changes:
                commits.append(task.commit(outcome))
        if commits:
            state = merge_commits(commits)
            state.base = {p: base[p] for p in state.positions}
            self._settle()
            future = self._writer.submit(self._write, state, poison)
            self._inflight = (future, dict(state.positions))
        else:
            self._settle()  # idle: nothing to overlap with
            # Lines other processors committed meanwhile, or left by a relay process that
            # died (it is started again).
            self._relay()
        return applied

    def _write(self, state: StateCommit, poison: list[tuple[str, bytes]]) -> None:
        """On the writer thread: publish the dead letters, commit, publish the new changes.

        Dead letters go first: a batch whose commit does not land is applied again after a
        restart, dead letters included, while a replay of a committed one writes nothing,
        so each dead letter is published at least once."""
        if poison:
            self.bus.publish(DEAD_LETTER, poison)
        self.store.commit(state)
        self._relay()

    def _settle(self) -> None:
        """Wait for the commit in flight; then store the group's positions in the log."""
        if self._inflight is None:
            return
        future, positions = self._inflight
        self._inflight = None
        future.result()  # a failed commit raises here (StoreUnavailable: the loop restarts)
        # Group positions in the log: for lag monitoring and so retention may delete.
        held = {p: o for p, o in positions.items() if p in self.tasks}
        if held:
            self.consumer.commit(held)
