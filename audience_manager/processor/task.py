"""One engine over some partitions of the log: its state, positions and snapshots.

A processor runs one task over every partition when it reads the whole log alone, or one
task per partition when processors share the partitions of a consumer group. A task's
engine numbers its users densely; its :class:`IdSpace` places those numbers among the
store's, so tasks of different processors never hand out the same store id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import cast

from audience_manager.bus.base import EventBus, Record
from audience_manager.engine import Engine, Event, MembershipChanges
from audience_manager.engine.snapshot import latest_snapshot, load_snapshot, save_snapshot
from audience_manager.membership import IdSpace
from audience_manager.processor.codec import ERASE, Command, dead_letter, decode
from audience_manager.processor.definitions import DefinitionSync
from audience_manager.processor.projection import build_commit
from audience_manager.store import StateCommit

__all__ = ["Outcome", "Task"]

#: How many recent messageIds a task remembers to drop duplicates.
MESSAGE_MEMORY = 1_000_000
_USER_ID = attrgetter("user_id")
_PARTITION, _OFFSET = attrgetter("partition"), attrgetter("offset")


@dataclass(slots=True)
class Outcome:
    """What applying one batch to a task changed, before it is committed."""

    records: int = 0
    changes: MembershipChanges = field(default_factory=MembershipChanges)
    users: set[str] = field(default_factory=set)
    erased: list[tuple[int, str]] = field(default_factory=list)  # (store id, userId)
    poison: list[tuple[str, bytes]] = field(default_factory=list)


class Task:
    """The engine of ``partitions``, the positions it has applied up to, its snapshots."""

    def __init__(
        self,
        partitions: tuple[int, ...],
        space: IdSpace,
        definitions: DefinitionSync,
        snapshots: Path,
        clock: Callable[[], int],
    ) -> None:
        self.partitions = partitions
        self.space = space
        self.definitions = definitions
        self.snapshots = snapshots
        self.clock = clock
        self.engine = Engine(clock)
        self.positions: dict[int, int] = dict.fromkeys(partitions, 0)
        self.seen_messages: dict[str, None] = {}  # recent messageIds, oldest first

    def __repr__(self) -> str:
        return f"Task(partitions={list(self.partitions)}, positions={self.positions})"

    # -- snapshots --------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the newest snapshot, if there is one; True if there was."""
        path = latest_snapshot(self.snapshots)
        if path is None:
            return False
        snapshot = load_snapshot(path, self.clock)
        self.engine = snapshot.engine
        self.positions = {p: snapshot.positions.get(p, 0) for p in self.partitions}
        self.seen_messages = dict.fromkeys(snapshot.meta.get("messages", []))
        self.definitions.restore(snapshot.meta.get("definitions", {}))
        return True

    def snapshot(self) -> None:
        """Write the engine at the task's positions (every one of them committed)."""
        meta = {"messages": list(self.seen_messages), "definitions": self.definitions.state()}
        save_snapshot(self.snapshots, self.engine, self.positions, meta)

    # -- applying ---------------------------------------------------------------------

    def apply(self, records: list[Record], now: int) -> Outcome:
        """Apply records of the task's partitions (in partition, offset order) at ``now``,
        then let time advance; positions move past every record."""
        outcome = Outcome(records=len(records))
        batch = decode(records)
        outcome.poison.extend(batch.poison)
        pending: list[Event] = []
        engine = self.engine

        def flush() -> None:
            if pending:
                result = engine.apply(pending, now=now)
                outcome.changes.extend(result.changes)
                outcome.users.update(map(_USER_ID, pending))
                for rejection in result.rejected:
                    event = pending[rejection.index]
                    outcome.poison.append((event.user_id, dead_letter(event, rejection.reason)))
                pending.clear()

        if batch.plain:  # events alone, none with a messageId
            pending.extend(cast("list[Event]", batch.items))
        else:
            for item in batch.items:
                if not isinstance(item, Command):
                    if not self._duplicate(item):
                        pending.append(item)
                elif item.command == ERASE:
                    flush()  # the user's earlier events first, then the erasure
                    dense = engine.ids.get(item.user_id)
                    if dense is not None:
                        outcome.changes.extend(engine.delete_user(item.user_id))
                        outcome.erased.append((self.space.to_store(dense), item.user_id))
                        outcome.users.discard(item.user_id)
        flush()
        outcome.changes.extend(engine.advance(now))
        outcome.users.update(engine.drain_expired())
        # The last record of each partition is its furthest (records come in log order).
        last = dict(zip(map(_PARTITION, records), map(_OFFSET, records), strict=True))
        for partition, offset in last.items():
            self.positions[partition] = offset + 1
        return outcome

    def commit(self, outcome: Outcome) -> StateCommit:
        """The store commit of an outcome (positions: the task's, after the batch)."""
        return build_commit(
            self.engine,
            self.positions,
            outcome.changes,
            outcome.users,
            outcome.erased,
            outcome.records,
            space=self.space,
        )

    def _duplicate(self, event: Event) -> bool:
        """True for a messageId seen before (the most recent ones are remembered)."""
        message_id = event.message_id
        if message_id is None:
            return False
        key = f"{event.user_id}\x00{message_id}"
        if key in self.seen_messages:
            return True
        self.seen_messages[key] = None
        if len(self.seen_messages) > MESSAGE_MEMORY:
            del self.seen_messages[next(iter(self.seen_messages))]
        return False

    # -- history ----------------------------------------------------------------------

    def history_size(self, beginning: Mapping[int, int]) -> int:
        """How many retained events of the task's partitions it has applied."""
        return sum(max(0, o - beginning.get(p, 0)) for p, o in self.positions.items())

    def history(self, bus: EventBus, topic: str, group: str, batch: int) -> Iterator[list[Event]]:
        """The retained events of the task's partitions already applied, in batches."""
        reader = bus.consumer(topic, group)
        reader.assign(list(self.partitions))
        beginning = bus.beginning_offsets(topic)
        reader.seek({p: beginning.get(p, 0) for p in self.partitions})
        try:
            applied = self.positions
            while True:
                records = [r for r in reader.poll(batch, 0.0) if r.offset < applied[r.partition]]
                if not records:
                    reached = reader.positions()
                    if all(reached.get(p, 0) >= o for p, o in self.positions.items()):
                        return
                    continue  # records still on their way from the log
                yield [i for i in decode(records).items if isinstance(i, Event)]
        finally:
            reader.close()
