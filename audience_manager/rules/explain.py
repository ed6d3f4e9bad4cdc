"""Why a user is or is not in a segment: each condition, whether it held, what it compared."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audience_manager.rules.compiler import (
    CompiledRule,
    EvalContext,
    GroupNode,
    Leaf,
    NotNode,
    SegmentLeaf,
)

__all__ = ["ConditionResult", "Explanation", "explain"]


@dataclass(slots=True)
class ConditionResult:
    """One node of the rule: whether it held, and for leaves the values compared."""

    path: str
    kind: str
    held: bool
    detail: dict[str, Any] = field(default_factory=dict)
    children: list[ConditionResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind, "held": self.held}
        out.update(self.detail)
        if self.children:
            out["conditions"] = [c.to_json() for c in self.children]
        return out


@dataclass(slots=True)
class Explanation:
    """The rule evaluated for one user, next to the stored membership."""

    segment_id: str
    user_id: str
    member: bool
    held: bool
    root: ConditionResult | None

    def to_json(self) -> dict[str, Any]:
        return {
            "segmentId": self.segment_id,
            "userId": self.user_id,
            "member": self.member,
            "held": self.held,
            "rules": None if self.root is None else self.root.to_json(),
        }


def explain(
    compiled: CompiledRule, ctx: EvalContext, segment_id: str, user_id: str, row: int
) -> Explanation:
    """Evaluate ``compiled`` for one row, recording every node."""
    rows = np.array([row], dtype=np.int64)
    root = _node(compiled.root, ctx, rows)
    member = bool(ctx.membership(segment_id, rows)[0])
    return Explanation(segment_id, user_id, member, root.held, root)


def _node(node: object, ctx: EvalContext, rows: np.ndarray[Any, Any]) -> ConditionResult:
    if isinstance(node, GroupNode):
        children = [_node(c, ctx, rows) for c in node.children]
        held = (all if node.match_all else any)(c.held for c in children)
        match = "all" if node.match_all else "any"
        return ConditionResult(node.path, "group", held, {"match": match}, children)
    if isinstance(node, NotNode):
        child = _node(node.child, ctx, rows)
        return ConditionResult(node.path, "not", not child.held, {}, [child])
    if isinstance(node, SegmentLeaf):
        member = bool(ctx.membership(node.segment_id, rows)[0])
        held = member if node.positive else not member
        reference = {
            "segment": node.segment_id,
            "operator": "in" if node.positive else "not_in",
            "actual": member,
        }
        return ConditionResult(node.path, "segment", held, reference)
    assert isinstance(node, Leaf)
    vector = ctx.vector(node.ref, rows)
    held = bool(node.predicate.evaluate(vector, ctx.now)[0])
    actual = vector.value(0)
    detail: dict[str, Any] = {
        "operator": node.predicate.operator,
        "value": node.predicate.value,
        "actual": actual,
    }
    if node.ref.source == "aggregate" and node.ref.aggregate is not None:
        spec = node.ref.aggregate
        detail = {"event": spec.event_type, "aggregate": spec.aggregate, **detail}
        if spec.property is not None:
            detail["property"] = spec.property
        if spec.within_ms is not None:
            detail["withinMs"] = spec.within_ms
        return ConditionResult(node.path, "event", held, detail)
    detail = {"field": node.ref.name, **detail}
    return ConditionResult(node.path, "attribute", held, detail)
