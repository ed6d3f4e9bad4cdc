"""The engine: events in, profile and membership changes out. Pure; the clock is injected."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Any

import numpy as np

from audience_manager.engine.aggregates import Aggregate, create_aggregate
from audience_manager.engine.batch import Batch, invalid_reason, union_rows
from audience_manager.engine.columns import BitColumn, RowArray, distinct
from audience_manager.engine.context import EngineContext
from audience_manager.engine.documents import profile_documents
from audience_manager.engine.events import Event
from audience_manager.engine.frames import EventFrame
from audience_manager.engine.profiles import ProfileTable
from audience_manager.engine.timers import DueTimes
from audience_manager.engine.types import (
    ApplyResult,
    ChangeRun,
    MembershipChanges,
    Rejection,
    SegmentDefinition,
)
from audience_manager.membership import SegmentMembership, UserIds
from audience_manager.rules.attributes import BUILTIN_ATTRIBUTES, ComputedAttribute
from audience_manager.rules.compiler import AggregateSpec, CompiledRule, compile_rule, rule_shape
from audience_manager.rules.deps import DependencyIndex, check_acyclic, evaluation_order
from audience_manager.rules.explain import Explanation, explain
from audience_manager.rules.model import Group
from audience_manager.rules.values import BoolArray

__all__ = ["Engine"]

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(slots=True)
class _Segment:
    definition: SegmentDefinition
    compiled: CompiledRule | None
    member: BitColumn


class Engine:
    """Profiles and segment membership of every user, updated by events and by time.

    ``apply`` and ``advance`` return every enter and exit; membership at any instant equals
    the rules evaluated from scratch at that instant (``docs/rules.md``). An aggregate that
    a new rule introduces (an event condition no other rule or attribute shares) starts
    empty unless the events applied so far are passed as ``history``.
    """

    def __init__(
        self, clock: Callable[[], int], attributes: Iterable[ComputedAttribute] = ()
    ) -> None:
        self.clock = clock
        self.now = clock()
        self.ids = UserIds()
        self.table = ProfileTable()
        self.membership = SegmentMembership()
        self.attributes: dict[str, ComputedAttribute] = dict(BUILTIN_ATTRIBUTES)
        self.aggregates: dict[str, Aggregate] = {}
        self._owners: dict[str, set[str]] = {}
        self._segments: dict[str, _Segment] = {}
        self._shapes: dict[str, Hashable] = {}  # of each rule (see ``_reevaluate``)
        self._names: dict[str, str] = {}
        self._order: list[str] = []
        self._index = DependencyIndex()
        self._seq = 0
        self._event_types: set[str] = set()  # event types already checked valid
        self._due = DueTimes()  # rows whose membership time alone may change
        self._expired: list[RowArray] = []  # rows whose attributes expired (for readers)
        self._attribute_keys: dict[str, str] = {}
        for attribute in self.attributes.values():
            spec = AggregateSpec.of_attribute(attribute)
            self._attribute_keys[attribute.name] = spec.key
            self._own(spec, "attribute:" + attribute.name)
        for attribute in attributes:
            self.upsert_attribute(attribute)

    def __getstate__(self) -> dict[str, Any]:
        # The clock is the caller's; a restored engine is given a new one.
        state = dict(self.__dict__)
        state["clock"] = None
        state.pop("_shapes", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # Rule shapes are not kept in snapshots (older ones have none).
        self._shapes = {
            k: rule_shape(s.compiled.root) for k, s in self._segments.items() if s.compiled
        }

    # -- definitions ------------------------------------------------------------------

    def upsert_attribute(
        self, attribute: ComputedAttribute, history: Iterable[Sequence[Event]] = ()
    ) -> MembershipChanges:
        """Define or redefine a computed attribute; segments using it are re-evaluated.

        ``history``: batches of the events applied so far, replayed into the attribute
        if it is new, so that it counts them too.
        """
        owner = "attribute:" + attribute.name
        spec = AggregateSpec.of_attribute(attribute)
        self._disown(owner, keep={spec.key})
        self.attributes[attribute.name] = attribute
        self._attribute_keys[attribute.name] = spec.key
        created = self._own(spec, owner)
        self._replay(created, history)
        return self._recompile_all(owner)

    def remove_attribute(self, name: str) -> MembershipChanges:
        """Forget a computed attribute; rules naming it read the trait of that name."""
        if name in BUILTIN_ATTRIBUTES or name not in self.attributes:
            raise KeyError(name)
        del self.attributes[name]
        del self._attribute_keys[name]
        self._disown("attribute:" + name)
        return self._recompile_all("attribute:" + name)

    def upsert_segment(
        self, definition: SegmentDefinition, history: Iterable[Sequence[Event]] = ()
    ) -> MembershipChanges:
        """Create or replace a segment and backfill it over every existing profile.

        An event condition that no other rule shares starts a new aggregate; ``history``
        (batches of the events applied so far) is replayed into such aggregates only.
        """
        compiled = None
        if definition.type == "DYNAMIC":
            if definition.rules is None:
                raise ValueError("a DYNAMIC segment needs rules")
            compiled = compile_rule(definition.rules, self.attributes, self._resolver(definition))
            references = {
                k: set(s.compiled.segments)
                for k, s in self._segments.items()
                if s.compiled is not None and k != definition.id
            }
            check_acyclic(definition.id, set(compiled.segments), references)
        old = self._segments.get(definition.id)
        if old is not None:
            self._names.pop(old.definition.name, None)
        # Aggregates the new rule still uses keep their state.
        kept = {spec.key for spec in compiled.aggregates} if compiled is not None else set()
        self._disown("segment:" + definition.id, keep=kept)
        member = old.member if old is not None else BitColumn()
        self._segments[definition.id] = _Segment(definition, compiled, member)
        self._shapes.pop(definition.id, None)
        if compiled is not None:
            self._shapes[definition.id] = rule_shape(compiled.root)
        self._names[definition.name] = definition.id
        self.membership.ensure_segment(definition.id)
        if compiled is not None:
            created = [
                k
                for spec in compiled.aggregates
                for k in self._own(spec, "segment:" + definition.id)
            ]
            self._replay(created, history)
            self._index.assign(definition.id, compiled.dependencies)
        else:
            self._index.remove(definition.id)
        self._reorder()
        if compiled is None:
            return MembershipChanges()
        return self.backfill(definition.id)

    def preview(
        self, rules: Group, sample: int = 10, history: Iterable[Sequence[Event]] = ()
    ) -> tuple[int, list[str]]:
        """Size and a sample of the users an unsaved rule matches now (nothing is kept).

        Event conditions no defined rule shares are counted over ``history``.
        """
        compiled = compile_rule(rules, self.attributes, self.segment_id)
        temporary = [s for s in compiled.aggregates if s.key not in self.aggregates]
        for spec in temporary:
            aggregate = create_aggregate(spec)
            aggregate.resize(self.ids.capacity)
            self.aggregates[spec.key] = aggregate
        try:
            self._replay([s.key for s in temporary], history)
            rows = self._all_rows()
            held = compiled.evaluate(EngineContext(self, self.now), rows)
        finally:
            for spec in temporary:
                del self.aggregates[spec.key]
        matched = rows[held]
        return len(matched), self.ids.user_ids(matched[:sample])

    def backfill(self, segment_id: str) -> MembershipChanges:
        """Evaluate a segment over every profile at once (and what depends on it)."""
        return self._reevaluate({}, {segment_id: self._all_rows()}, self.now)

    def remove_segment(self, segment_id: str) -> None:
        """Forget a segment (segments referencing it must be changed first)."""
        segment = self._segments.pop(segment_id)
        self._shapes.pop(segment_id, None)
        self._names.pop(segment.definition.name, None)
        self._index.remove(segment_id)
        self._disown("segment:" + segment_id)
        self.membership.drop_segment(segment_id)
        self._reorder()

    def segment_id(self, reference: str) -> str:
        """A segment id from an id or a name (KeyError if neither)."""
        if reference in self._segments:
            return reference
        return self._names[reference]

    def set_static_members(
        self, segment_id: str, user_ids: Sequence[str], mode: str = "replace"
    ) -> MembershipChanges:
        """Add, remove or replace the members of a STATIC segment."""
        segment = self._segments[segment_id]
        if segment.compiled is not None:
            raise ValueError("members can only be set on a STATIC segment")
        first_new = self.ids.capacity
        rows = self._intern(user_ids)
        current = segment.member.rows()
        if mode == "replace":
            candidates = np.union1d(current, rows)
            held = np.isin(candidates, rows)
        else:
            candidates = distinct(rows)
            held = np.full(len(candidates), mode != "remove")
        changes, changed = self._commit(segment_id, candidates, held, self.now)
        touched = {"segment:" + segment_id: changed} if len(changed) else {}
        fresh = rows[rows >= first_new]
        return changes + self._reevaluate(touched, self._everywhere(fresh), self.now)

    # -- events and time --------------------------------------------------------------

    def apply(self, events: Sequence[Event], now: int | None = None) -> ApplyResult:
        """Apply a batch of events in arrival order at ``now`` (default: the clock).

        Time first catches up: windows expire and timers fire before the events count.
        """
        now = self._tick(now)
        result = ApplyResult(changes=self._advance(now))
        batch = self._accept(events, result)
        if batch is None:
            return result
        accepted = batch.events
        first_new = self.ids.capacity
        rows = self._intern(batch.user_ids)
        ts = np.asarray(batch.stamps, dtype=np.int64)
        seq = np.arange(self._seq, self._seq + len(accepted), dtype=np.int64)
        self._seq += len(accepted)
        unique = distinct(rows)
        touched: dict[str, RowArray] = {"attribute:firstSeen": unique, "attribute:lastSeen": unique}
        self.table.see(rows, ts)
        self._apply_traits(batch, rows, ts, touched)
        self._apply_aggregates(batch, rows, ts, seq, now, touched)
        fresh = np.arange(first_new, self.ids.capacity, dtype=np.int64)
        changes = self._reevaluate(touched, self._everywhere(fresh), now, universe=unique)
        result.changes.extend(changes)
        result.profiles = self.ids.user_ids(unique)
        return result

    def _accept(self, events: Sequence[Event], result: ApplyResult) -> Batch | None:
        """The valid events of a batch; the others are recorded as rejected."""
        batch = Batch(list(events))
        if batch.plainly_valid(self._event_types):
            return batch  # the common case: checked as a whole
        accepted = []
        for index, event in enumerate(events):
            reason = invalid_reason(event)
            if reason is None:
                accepted.append(event)
                if len(self._event_types) < 100_000:
                    self._event_types.add(event.event_type)
            else:
                result.rejected.append(Rejection(index, reason))
        return Batch(accepted) if accepted else None

    def advance(self, now: int | None = None) -> MembershipChanges:
        """Apply what time alone changes up to ``now`` (default: the clock)."""
        return self._advance(self._tick(now))

    def _tick(self, now: int | None = None) -> int:
        self.now = max(self.now, self.clock() if now is None else now)
        return self.now

    def drain_expired(self) -> list[str]:
        """Users whose attribute values changed by time alone since the last call."""
        rows = distinct(np.concatenate(self._expired)) if self._expired else _EMPTY
        self._expired = []
        return self.ids.user_ids(rows) if len(rows) else []

    def _advance(self, now: int) -> MembershipChanges:
        touched: dict[str, RowArray] = {}
        for key, aggregate in self.aggregates.items():
            rows = aggregate.expire(now)
            if len(rows):
                self._mark(touched, key, rows)
                if any(o.startswith("attribute:") for o in self._owners.get(key, ())):
                    self._expired.append(rows)
        extra = {}
        due = self._due.pop_due(now)
        if len(due):
            for segment_id, segment in self._segments.items():
                if segment.compiled is not None and segment.compiled.relative:
                    extra[segment_id] = due
        if not touched and not extra:
            return MembershipChanges()
        return self._reevaluate(touched, extra, now)

    def _apply_traits(
        self, batch: Batch, rows: RowArray, ts: RowArray, touched: dict[str, RowArray]
    ) -> None:
        for key, (index, values) in batch.trait_columns().items():
            changed = self.table.set_traits(key, rows[index], values, ts[index])
            if len(changed):
                touched["trait:" + key] = changed

    def _apply_aggregates(
        self,
        batch: Batch,
        rows: RowArray,
        ts: RowArray,
        seq: RowArray,
        now: int,
        touched: dict[str, RowArray],
        only: list[str] | None = None,
    ) -> None:
        events = batch.events
        by_type = batch.positions_by_type()
        properties = [e.properties for e in events]
        frames: dict[str, tuple[RowArray, EventFrame]] = {}
        for key, aggregate in self.aggregates.items():
            event_type = aggregate.spec.event_type
            if (event_type != "*" and event_type not in by_type) or (only and key not in only):
                continue
            cached = frames.get(event_type)
            if cached is None:
                if event_type == "*":
                    positions, frame = np.arange(len(events)), EventFrame(properties)
                else:
                    positions = by_type[event_type]
                    frame = EventFrame([properties[i] for i in positions.tolist()])
                cached = frames[event_type] = (positions, frame)
            positions, frame = cached
            changed = aggregate.feed(rows[positions], frame, ts[positions], seq[positions], now)
            if len(changed):
                self._mark(touched, key, changed)

    def _mark(self, touched: dict[str, RowArray], key: str, rows: RowArray) -> None:
        touched["aggregate:" + key] = rows
        for owner in self._owners.get(key, ()):
            if owner.startswith("attribute:"):
                touched[owner] = rows

    # -- evaluation -------------------------------------------------------------------

    def _reevaluate(
        self,
        touched: dict[str, RowArray],
        extra: dict[str, RowArray],
        now: int,
        universe: RowArray | None = None,
    ) -> MembershipChanges:
        """Re-evaluate affected segments in dependency order; return the changes.

        ``universe``: sorted rows that contain every touched row (a batch's users), which
        lets the rows of a segment be unioned without sorting.
        """
        changes = MembershipChanges()
        affected = self._index.affected(touched.keys()) | extra.keys()
        if not affected:
            return changes
        context = EngineContext(self, now)
        # Segments reading the same things share the work (the extra rows of many segments
        # are one array: the batch's new users, or the rows due).
        unions: dict[tuple[tuple[str, ...], int], RowArray] = {}
        results: dict[tuple[Hashable, int], tuple[RowArray, BoolArray]] = {}
        for segment_id in self._order:
            segment = self._segments[segment_id]
            if segment.compiled is None:
                continue
            keys = tuple(k for k in segment.compiled.dependencies if k in touched)
            parts = [touched[k] for k in keys]
            more = extra.get(segment_id)
            if more is not None:
                parts.append(more)
            if not parts:
                continue
            if len(parts) == 1:
                rows = parts[0]
            else:
                shared = (keys, -1 if more is None else id(more))
                cached = unions.get(shared)
                if cached is None:
                    cached = unions[shared] = union_rows(parts, universe)
                rows = cached
            # Segments of one rule shape over the same rows share the evaluation (and the
            # times it changes by itself: timers are per row, the earliest wins).
            shape = (self._shapes[segment_id], id(rows))
            # Each result keeps its rows alive, so that no other array takes their id.
            result = results.get(shape)
            if result is None:
                result = results[shape] = (rows, segment.compiled.evaluate(context, rows))
                if segment.compiled.relative:
                    self._due.schedule(rows, segment.compiled.next_change(context, rows))
            new_changes, changed = self._commit(segment_id, rows, result[1], now)
            changes.extend(new_changes)
            if len(changed):
                touched["segment:" + segment_id] = changed
        return changes

    def _commit(
        self, segment_id: str, rows: RowArray, held: BoolArray, now: int
    ) -> tuple[MembershipChanges, RowArray]:
        segment = self._segments[segment_id]
        was = segment.member.get(rows)
        enter, leave = rows[held & ~was], rows[was & ~held]
        if not len(enter) and not len(leave):
            return MembershipChanges(), _EMPTY
        segment.member.set(enter, True)
        segment.member.set(leave, False)
        self.membership.enter(segment_id, enter)
        self.membership.exit(segment_id, leave)
        changes = MembershipChanges(
            [
                ChangeRun(segment_id, enter, self.ids.user_ids(enter), True, now),
                ChangeRun(segment_id, leave, self.ids.user_ids(leave), False, now),
            ]
        )
        return changes, np.concatenate([enter, leave])

    # -- reading ----------------------------------------------------------------------

    def members(self, segment_id: str) -> set[str]:
        """User ids in a segment."""
        rows = np.asarray(self.membership.members(segment_id).to_array(), dtype=np.int64)
        return set(self.ids.user_ids(rows))

    def segments_of(self, user_id: str) -> list[str]:
        """Segment ids a user belongs to."""
        row = self.ids.get(user_id)
        return [] if row is None else self.membership.segments_of(row)

    def profile(self, user_id: str) -> dict[str, Any] | None:
        """A user's profile: traits, attributes, first/last seen and segments."""
        document = self.profiles([user_id])[0]
        row = self.ids.get(user_id)
        if document is None or row is None:
            return None
        document["segments"] = self.membership.segments_of(row)
        return document

    def profiles(self, user_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Profiles of many users at once (None for unknown ones), without segments."""
        return profile_documents(self, user_ids)

    def explain(self, user_id: str, segment_id: str) -> Explanation:
        """Which conditions of a segment hold for a user, with the values compared."""
        segment = self._segments[self.segment_id(segment_id)]
        row = self.ids.get(user_id)
        if row is None:
            raise KeyError(user_id)
        if segment.compiled is None:
            member = bool(segment.member.get(np.array([row], dtype=np.int64))[0])
            return Explanation(segment.definition.id, user_id, member, member, None)
        return explain(
            segment.compiled, EngineContext(self, self.now), segment.definition.id, user_id, row
        )

    def delete_user(self, user_id: str) -> MembershipChanges:
        """Erase a user: profile, aggregates, memberships; returns the exits."""
        row = self.ids.get(user_id)
        if row is None:
            raise KeyError(user_id)
        rows = np.array([row], dtype=np.int64)
        changes = MembershipChanges(
            [
                ChangeRun(s, rows, [user_id], False, self.now)
                for s in self.membership.segments_of(row)
            ]
        )
        for segment in self._segments.values():
            segment.member.set(rows, False)
        self._due.clear(row)
        self.membership.remove_user(row)
        self.table.clear(row)
        for aggregate in self.aggregates.values():
            aggregate.clear(row)
        self.ids.release(user_id)
        return changes

    def attribute_aggregate(self, name: str) -> Aggregate:
        """The aggregate behind a built-in or computed attribute."""
        return self.aggregates[self._attribute_keys[name]]

    def member_bits(self, segment_id: str) -> BitColumn:
        """The membership bit of every row for a segment."""
        return self._segments[segment_id].member

    # -- internals --------------------------------------------------------------------

    def _intern(self, user_ids: Sequence[str]) -> RowArray:
        before = self.ids.capacity
        rows = self.ids.intern_many(user_ids)
        if self.ids.capacity > before:
            capacity = self.ids.capacity
            self.table.resize(capacity)
            for aggregate in self.aggregates.values():
                aggregate.resize(capacity)
            self.membership.add_users(np.arange(before, capacity, dtype=np.int64))
        return rows

    def _everywhere(self, rows: RowArray) -> dict[str, RowArray]:
        """``rows`` to evaluate in every rule-based segment (users never evaluated yet)."""
        if len(rows) == 0:
            return {}
        return {k: rows for k, s in self._segments.items() if s.compiled is not None}

    def _all_rows(self) -> RowArray:
        return np.asarray(self.membership.universe.to_array(), dtype=np.int64)

    def _own(self, spec: AggregateSpec, owner: str) -> list[str]:
        """Register ``owner`` as a user of ``spec``; returns ``[key]`` if it was created."""
        owners = self._owners.setdefault(spec.key, set())
        owners.add(owner)
        if spec.key in self.aggregates:
            return []
        aggregate = create_aggregate(spec)
        aggregate.resize(self.ids.capacity)
        self.aggregates[spec.key] = aggregate
        return [spec.key]

    def _replay(self, keys: list[str], history: Iterable[Sequence[Event]]) -> None:
        """Feed past events to newly created aggregates (and to nothing else)."""
        if not keys:
            return
        for events in history:
            known = [
                e
                for e in events
                if invalid_reason(e) is None and self.ids.get(e.user_id) is not None
            ]
            if not known:
                continue
            batch = Batch(known)
            rows = np.asarray([self.ids.get(u) for u in batch.user_ids], dtype=np.int64)
            ts = np.asarray(batch.stamps, dtype=np.int64)
            seq = np.arange(self._seq, self._seq + len(known), dtype=np.int64)
            self._seq += len(known)
            self._apply_aggregates(batch, rows, ts, seq, self.now, {}, only=keys)

    def _disown(self, owner: str, keep: Set[str] = frozenset()) -> None:
        """Drop ``owner`` from aggregates outside ``keep``; unowned aggregates are deleted."""
        for key in [k for k, owners in self._owners.items() if owner in owners and k not in keep]:
            self._owners[key].discard(owner)
            if not self._owners[key]:
                del self._owners[key]
                del self.aggregates[key]

    def _reorder(self) -> None:
        self._order = evaluation_order(
            {
                k: set(s.compiled.segments) if s.compiled else set()
                for k, s in self._segments.items()
            }
        )

    def _resolver(self, definition: SegmentDefinition) -> Callable[[str], str]:
        def resolve(reference: str) -> str:
            if reference in (definition.id, definition.name):
                return definition.id
            return self.segment_id(reference)

        return resolve

    def _recompile_all(self, owner: str) -> MembershipChanges:
        changes = MembershipChanges()
        for segment_id in list(self._order):
            segment = self._segments[segment_id]
            if segment.compiled is not None:
                changes.extend(self.upsert_segment(segment.definition))
        return changes
