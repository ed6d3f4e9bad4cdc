"""Keep the engine's segments and attributes in step with the catalog.

The catalog's change feed says what changed since a revision; each changed segment is
marked ``BUILDING``, compiled and backfilled over every profile (new event conditions get
the retained log replayed into them), its membership is written to the state store, and it
is marked ``ACTIVE`` with its size, or ``FAILED`` with the reason. Where processors share
the partitions, every partition's engine builds the segment and the store counts them:
progress is the share of partitions built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from audience_manager.catalog.errors import CatalogError, CatalogUnavailable, Conflict, NotFound
from audience_manager.catalog.schemas import AttributeRead, SegmentRead
from audience_manager.catalog.service import CatalogService
from audience_manager.engine import Engine, Event, SegmentDefinition
from audience_manager.membership import IdSpace
from audience_manager.processor.projection import WHOLE_LOG, build_commit
from audience_manager.rules.errors import RuleValidationError
from audience_manager.rules.model import parse_rules
from audience_manager.store import ChangeRecord, StateCommit, StateStore

__all__ = ["DefinitionSync"]

log = logging.getLogger(__name__)
#: Seconds between progress reports while a segment's history is replayed.
PROGRESS_EVERY = 0.5
History = Callable[[], Iterable[Sequence[Event]]]


class DefinitionSync:
    """Applies catalog changes to an engine; remembers the versions it applied."""

    def __init__(
        self,
        catalog: CatalogService,
        history: History = lambda: (),
        space: IdSpace = WHOLE_LOG,
        partitions: int = 1,
    ) -> None:
        self.catalog = catalog
        self.history = history
        #: How many events ``history`` holds (for progress while it is replayed).
        self.history_size: Callable[[], int] = lambda: 0
        #: The engine's place among the store's ids. With a stride above 1 the engine is
        #: one of ``partitions`` that share every segment: each commits only its own
        #: members, and a segment is ACTIVE once every partition has built it.
        self.space = space
        self.partitions = partitions
        self.revision = -1
        self.segments: dict[str, int] = {}  # segment id -> version in the engine
        self.attributes: dict[str, int] = {}

    def state(self) -> dict[str, Any]:
        """What a snapshot keeps of the sync, to resume without redoing every segment."""
        return {"revision": self.revision, "segments": self.segments, "attributes": self.attributes}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.revision = int(state.get("revision", -1))
        self.segments = dict(state.get("segments", {}))
        self.attributes = dict(state.get("attributes", {}))

    def sync(
        self, engine: Engine, store: StateStore, positions: Mapping[int, int], force: bool = False
    ) -> bool:
        """Apply catalog changes since the last sync; True if definitions changed."""
        revision = self.catalog.current_revision()
        if revision == self.revision and not force:
            return False
        changes = self.catalog.changes_since(max(self.revision, 0) if not force else 0)
        changed = False
        for attribute in changes.attributes:
            changed |= self._attribute(engine, attribute)
        live = [s for s in changes.segments if not s.deleted]
        for segment in changes.segments:
            if segment.deleted and segment.id in self.segments:
                self._drop(engine, store, positions, segment.id)
                changed = True
        for segment in _referenced_first(live):
            if self.segments.get(segment.id) != segment.version:
                try:
                    self._segment(engine, store, positions, segment)
                except CatalogUnavailable as exc:
                    # The revision stays behind: the next sync takes this segment up again.
                    log.warning("segment %s left for the next sync: %s", segment.id, exc)
                    return changed
                changed = True
        self.revision = changes.revision
        return changed

    def _attribute(self, engine: Engine, attribute: AttributeRead) -> bool:
        if attribute.deleted:
            if self.attributes.pop(attribute.name, None) is None:
                return False
            engine.remove_attribute(attribute.name)
            return True
        if self.attributes.get(attribute.name) == attribute.version:
            return False
        engine.upsert_attribute(attribute.to_attribute(), history=self.history())
        self.attributes[attribute.name] = attribute.version
        return True

    def _segment(
        self, engine: Engine, store: StateStore, positions: Mapping[int, int], segment: SegmentRead
    ) -> None:
        shared = self.space.stride > 1
        try:
            progress = self._built(store, segment) / self.partitions if shared else 0.0
            self.catalog.set_status(
                segment.id, "BUILDING", progress=progress, version=segment.version
            )
            rules = parse_rules(segment.rules) if segment.rules is not None else None
            definition = SegmentDefinition(segment.id, segment.name, rules, segment.type)
            span = 1 / self.partitions if shared else 1.0
            history = self._progress(segment, self.history(), progress, span)
            changes = engine.upsert_segment(definition, history=history)
        except (RuleValidationError, KeyError, ValueError) as exc:
            log.warning("segment %s failed: %s", segment.id, exc)
            self._status(segment, "FAILED", reason=str(exc))
            self.segments[segment.id] = segment.version
            return
        except (Conflict, NotFound):  # replaced or deleted meanwhile: the next sync has it
            return
        commit = build_commit(engine, positions, changes, (), space=self.space)
        commit.base = dict(positions)
        if shared:  # the other partitions' members stay: only this engine's change
            store.commit(commit)
            self.segments[segment.id] = segment.version
            store.set_marker(_built_marker(segment.id, self.space.offset), segment.version)
            built = self._built(store, segment)
            if built < self.partitions:
                self._status(segment, "BUILDING", progress=built / self.partitions)
            else:
                self._status(segment, "ACTIVE", size=store.sizes().get(segment.id, 0))
            return
        members = np.asarray(engine.membership.members(segment.id).to_array(), dtype=np.int64)
        commit.replaced[segment.id] = members.tolist()
        commit.enters.pop(segment.id, None)
        commit.exits.pop(segment.id, None)
        store.commit(commit)
        self.segments[segment.id] = segment.version
        self._status(segment, "ACTIVE", size=len(members))

    def _progress(
        self, segment: SegmentRead, batches: Iterable[Sequence[Event]], start: float, span: float
    ) -> Iterator[Sequence[Event]]:
        """The history's batches, reporting how far the replay got as the segment's progress
        (from ``start``, over ``span``) at most every ``PROGRESS_EVERY`` seconds."""
        total = max(1, self.history_size())
        done, reported = 0, time.monotonic()
        for batch in batches:
            yield batch
            done += len(batch)
            if time.monotonic() - reported >= PROGRESS_EVERY:
                reported = time.monotonic()
                progress = start + span * min(done / total, 0.99)
                self._status(segment, "BUILDING", progress=round(progress, 4))

    def _built(self, store: StateStore, segment: SegmentRead) -> int:
        """How many partitions have built this version of the segment."""
        return sum(
            store.marker(_built_marker(segment.id, p)) == segment.version
            for p in range(self.partitions)
        )

    def _drop(
        self, engine: Engine, store: StateStore, positions: Mapping[int, int], segment_id: str
    ) -> None:
        engine.remove_segment(segment_id)
        del self.segments[segment_id]
        reset = ChangeRecord(segment_id, "", -1, "drop", engine.now)
        base = dict(positions)
        store.commit(
            StateCommit(base, engine.now, dropped=[segment_id], changes=[reset], base=base)
        )

    def _status(self, segment: SegmentRead, status: str, **fields: Any) -> None:
        try:
            self.catalog.set_status(segment.id, status, version=segment.version, **fields)  # type: ignore[arg-type]
        except CatalogError as exc:  # replaced or deleted meanwhile: the next sync reports
            log.info("status of segment %s not recorded: %s", segment.id, exc)


def _built_marker(segment_id: str, partition: int) -> str:
    return f"built:{segment_id}:{partition}"


def _referenced_first(segments: list[SegmentRead]) -> list[SegmentRead]:
    """Segments ordered so that a segment comes after those its rules reference."""
    by_key = {s.id: s for s in segments} | {s.name: s for s in segments}
    ordered: list[SegmentRead] = []
    placed: set[str] = set()

    def place(segment: SegmentRead, trail: frozenset[str]) -> None:
        if segment.id in placed or segment.id in trail:
            return
        for reference in _references(segment.rules):
            target = by_key.get(reference)
            if target is not None:
                place(target, trail | {segment.id})
        placed.add(segment.id)
        ordered.append(segment)

    for segment in segments:
        place(segment, frozenset())
    return ordered


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        if isinstance(node.get("segment"), str):
            yield node["segment"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)
