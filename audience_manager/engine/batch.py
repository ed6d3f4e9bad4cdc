"""A batch of events as columns: fields pulled out once, validated, grouped."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import numpy as np

from audience_manager.engine.columns import RowArray, distinct
from audience_manager.engine.events import Event
from audience_manager.rules.checks import EVENT_TYPE

_PROPERTIES, _TRAITS = attrgetter("properties"), attrgetter("traits")
_OBJECT, _OBJECT_OR_NONE = {dict}, {dict, type(None)}

__all__ = ["Batch", "invalid_reason", "union_rows"]


def union_rows(parts: list[RowArray], universe: RowArray | None) -> RowArray:
    """Sorted distinct rows of all ``parts`` (each a subset of ``universe`` when given)."""
    if universe is None:
        return distinct(np.concatenate(parts))
    mask = np.zeros(len(universe), dtype=np.bool_)
    for part in parts:
        mask[np.searchsorted(universe, part)] = True
    return universe[mask]


class Batch:
    """The fields of a batch's events, pulled out once."""

    __slots__ = ("codes", "events", "stamps", "type_codes", "types", "user_ids")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.user_ids = [e.user_id for e in events]
        self.stamps = [e.timestamp for e in events]
        self.types = [e.event_type for e in events]
        self.type_codes: dict[str, int] = {}
        self.codes: list[int] = []

    def plainly_valid(self, known: set[str], remember: int = 100_000) -> bool:
        """True when every event has a valid type, a sane user id and time. ``known``:
        types already checked, to which valid new ones are added while it holds fewer than
        ``remember``."""
        codes = self.type_codes
        setdefault = codes.setdefault
        try:
            self.codes = [setdefault(t, len(codes)) for t in self.types]
        except TypeError:  # an unhashable event type
            return False
        new = codes.keys() - known
        if not all(isinstance(t, str) and EVENT_TYPE.fullmatch(t) for t in new):
            return False
        if len(known) < remember:
            known.update(new)
        lengths = list(map(len, self.user_ids)) if set(map(type, self.user_ids)) == {str} else [0]
        events = self.events
        return (
            set(map(type, map(_PROPERTIES, events))) <= _OBJECT
            and set(map(type, map(_TRAITS, events))) <= _OBJECT_OR_NONE
            and min(lengths, default=1) > 0
            and max(lengths, default=0) <= 256
            and set(map(type, self.stamps)) <= {int}
            and min(self.stamps, default=0) >= 0
        )

    def trait_columns(self) -> dict[str, tuple[RowArray, list[Any]]]:
        """Per trait key: the positions of events setting it (arrival order) and the values."""
        # Events usually carry the same set of traits: group by key set, transpose with zip.
        shapes: dict[tuple[str, ...], tuple[list[int], list[tuple[Any, ...]]]] = {}
        for position, event in enumerate(self.events):
            traits = event.traits
            if traits:
                shape = tuple(traits)
                group = shapes.get(shape)
                if group is None:
                    group = shapes[shape] = ([], [])
                group[0].append(position)
                group[1].append(tuple(traits.values()))
        by_key: dict[str, list[tuple[list[int], list[Any]]]] = {}
        for shape, (positions, values) in shapes.items():
            for key, column in zip(shape, zip(*values, strict=True), strict=True):
                by_key.setdefault(key, []).append((positions, list(column)))
        out: dict[str, tuple[RowArray, list[Any]]] = {}
        for key, parts in by_key.items():
            if len(parts) == 1:
                out[key] = (np.asarray(parts[0][0], dtype=np.int64), parts[0][1])
                continue
            merged = sorted(  # back into arrival order
                (p, v) for positions, vals in parts for p, v in zip(positions, vals, strict=True)
            )
            index = np.asarray([p for p, _ in merged], dtype=np.int64)
            out[key] = (index, [v for _, v in merged])
        return out

    def positions_by_type(self) -> dict[str, RowArray]:
        """Positions of the events of each type, in arrival order."""
        codes = self.type_codes
        if not codes:
            setdefault = codes.setdefault
            self.codes = [setdefault(t, len(codes)) for t in self.types]
        if len(codes) == 1:
            return {next(iter(codes)): np.arange(len(self.events), dtype=np.int64)}
        code = np.asarray(self.codes, dtype=np.int64)
        order = np.argsort(code, kind="stable")
        bounds = np.searchsorted(code[order], np.arange(len(codes) + 1))
        return {t: order[bounds[c] : bounds[c + 1]] for t, c in codes.items()}


def invalid_reason(event: Event) -> str | None:
    if not isinstance(event.user_id, str) or not 1 <= len(event.user_id) <= 256:
        return "userId must be a string of 1 to 256 characters"
    if not isinstance(event.event_type, str) or not EVENT_TYPE.fullmatch(event.event_type):
        return "eventType must match [A-Za-z0-9_.:-]{1,64}"
    if not isinstance(event.timestamp, int) or isinstance(event.timestamp, bool):
        return "timestamp must be epoch milliseconds"
    if event.timestamp < 0:
        return "timestamp must not be before 1970"
    if not isinstance(event.properties, dict):
        return "properties must be an object"
    if event.traits is not None and not isinstance(event.traits, dict):
        return "traits must be an object"
    return None
