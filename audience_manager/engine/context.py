"""What compiled rules read while the engine evaluates: values and other segments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from audience_manager.engine.columns import RowArray
from audience_manager.rules.compiler import FieldRef
from audience_manager.rules.values import BoolArray, ValueVector

if TYPE_CHECKING:
    from audience_manager.engine.engine import Engine

__all__ = ["EngineContext"]


class EngineContext:
    """Reads values for compiled rules from the engine's state at one instant."""

    __slots__ = ("engine", "now")

    def __init__(self, engine: Engine, now: int) -> None:
        self.engine = engine
        self.now = now

    def vector(self, ref: FieldRef, rows: RowArray) -> ValueVector:
        engine = self.engine
        if ref.source == "trait":
            return engine.table.trait_vector(ref.name, rows)
        if ref.source == "time":
            return engine.table.times(ref.name, rows)
        if ref.source == "attribute":
            return engine.attribute_aggregate(ref.name).vector(rows)
        assert ref.aggregate is not None
        return engine.aggregates[ref.aggregate.key].vector(rows)

    def membership(self, segment_id: str, rows: RowArray) -> BoolArray:
        return self.engine.member_bits(segment_id).get(rows)
