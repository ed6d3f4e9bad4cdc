"""Compile a rule tree into a vectorised evaluator.

A compiled rule evaluates many users at once: each leaf pulls the :class:`ValueVector` of
its field for the rows asked about and runs a :class:`Predicate`; groups combine the
boolean arrays. Event conditions become aggregates (:class:`AggregateSpec`) that the engine
keeps up to date per user, compared like any attribute. The compiled rule also lists what
it depends on, so an event re-evaluates only the segments it can affect.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from audience_manager.rules.attributes import TIME_ATTRIBUTES, ComputedAttribute
from audience_manager.rules.errors import RuleIssue, RuleValidationError
from audience_manager.rules.model import (
    AttributeCondition,
    Condition,
    EventCondition,
    Group,
    Not,
    SegmentReference,
)
from audience_manager.rules.predicates import NEVER, TIME_OPERATORS, Predicate
from audience_manager.rules.values import BoolArray, ValueVector

__all__ = [
    "AggregateSpec",
    "CompiledRule",
    "EvalContext",
    "FieldRef",
    "GroupNode",
    "Leaf",
    "Node",
    "NotNode",
    "SegmentLeaf",
    "compile_rule",
    "compile_where",
    "resolve_field",
    "rule_shape",
]

RowArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """What an aggregate counts: events of a type, filtered, over an optional window."""

    event_type: str
    aggregate: str
    property: str | None
    where: tuple[AttributeCondition, ...] = ()
    within_ms: int | None = None
    key: str = field(default="", compare=False)

    @classmethod
    def create(
        cls,
        event_type: str,
        aggregate: str,
        property: str | None,
        where: Sequence[AttributeCondition] = (),
        within_ms: int | None = None,
    ) -> AggregateSpec:
        """A spec with its canonical key (equal definitions share one aggregate)."""
        canonical = json.dumps(
            [
                event_type,
                aggregate,
                property,
                [c.model_dump(mode="json", by_alias=True) for c in where],
                within_ms,
            ],
            sort_keys=True,
        )
        return cls(event_type, aggregate, property, tuple(where), within_ms, canonical)

    @classmethod
    def of_attribute(cls, attribute: ComputedAttribute) -> AggregateSpec:
        """The aggregate behind a computed attribute."""
        return cls.create(
            attribute.event_type,
            attribute.aggregate,
            attribute.property,
            attribute.where,
            attribute.within_ms,
        )

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AggregateSpec) and other.key == self.key


@dataclass(frozen=True, slots=True)
class FieldRef:
    """Where a leaf's value comes from: a named attribute, a trait path, or an aggregate."""

    source: Literal["attribute", "time", "trait", "aggregate"]
    name: str
    aggregate: AggregateSpec | None = None

    @property
    def dependency(self) -> str:
        """The key an event's effects are indexed by (``trait:`` keys use the root key)."""
        if self.source == "aggregate" and self.aggregate is not None:
            return "aggregate:" + self.aggregate.key
        if self.source == "trait":
            return "trait:" + self.name.split(".", 1)[0]
        return "attribute:" + self.name


class EvalContext(Protocol):
    """What a compiled rule reads: values of fields and membership of other segments."""

    now: int

    def vector(self, ref: FieldRef, rows: RowArray) -> ValueVector: ...

    def membership(self, segment_id: str, rows: RowArray) -> BoolArray: ...


class Node(Protocol):
    def evaluate(self, ctx: EvalContext, rows: RowArray) -> BoolArray: ...


@dataclass(slots=True)
class Leaf:
    """An attribute comparison; ``path`` locates it in the rule for explanations."""

    ref: FieldRef
    predicate: Predicate
    path: str

    def evaluate(self, ctx: EvalContext, rows: RowArray) -> BoolArray:
        return self.predicate.evaluate(ctx.vector(self.ref, rows), ctx.now)


@dataclass(slots=True)
class SegmentLeaf:
    segment_id: str
    positive: bool
    path: str

    def evaluate(self, ctx: EvalContext, rows: RowArray) -> BoolArray:
        member = ctx.membership(self.segment_id, rows)
        return member if self.positive else ~member


@dataclass(slots=True)
class GroupNode:
    match_all: bool
    children: list[Node]
    path: str

    def evaluate(self, ctx: EvalContext, rows: RowArray) -> BoolArray:
        if self.match_all:
            result = np.ones(len(rows), dtype=np.bool_)
            for child in self.children:
                # Later children only see the rows still in play.
                live = np.flatnonzero(result)
                if len(live) == 0:
                    break
                result[live] = child.evaluate(ctx, rows[live])
            return result
        result = np.zeros(len(rows), dtype=np.bool_)
        for child in self.children:
            open_ = np.flatnonzero(~result)
            if len(open_) == 0:
                break
            result[open_] = child.evaluate(ctx, rows[open_])
        return result


@dataclass(slots=True)
class NotNode:
    child: Node
    path: str

    def evaluate(self, ctx: EvalContext, rows: RowArray) -> BoolArray:
        return ~self.child.evaluate(ctx, rows)


@dataclass(slots=True)
class CompiledRule:
    """A rule ready to evaluate, with everything it depends on."""

    root: GroupNode
    dependencies: frozenset[str]
    aggregates: frozenset[AggregateSpec]
    segments: frozenset[str]
    relative: list[Leaf]

    def evaluate(self, ctx: EvalContext, rows: RowArray) -> BoolArray:
        """Membership of each row under this rule."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.bool_)
        return self.root.evaluate(ctx, rows)

    def next_change(self, ctx: EvalContext, rows: RowArray) -> FloatArray:
        """The earliest instant after ``ctx.now`` at which time alone may change a row."""
        due = np.full(len(rows), NEVER)
        for leaf in self.relative:
            due = np.minimum(due, leaf.predicate.next_change(ctx.vector(leaf.ref, rows), ctx.now))
        return due


def rule_shape(node: Node) -> Hashable:
    """What a compiled rule computes, leaving out where its parts sit in the rule: rules
    of equal shape hold for the same rows (segments cloned from one another share it)."""
    if isinstance(node, GroupNode):
        return ("all" if node.match_all else "any", tuple(rule_shape(c) for c in node.children))
    if isinstance(node, NotNode):
        return ("not", rule_shape(node.child))
    if isinstance(node, SegmentLeaf):
        return ("segment", node.segment_id, node.positive)
    if isinstance(node, Leaf):
        ref = node.ref
        spec = ref.aggregate.key if ref.aggregate is not None else None
        return ("field", ref.source, ref.name, spec, node.predicate.condition.model_dump_json())
    raise TypeError(f"not a rule node: {node!r}")


def resolve_field(name: str, attributes: Collection[str]) -> FieldRef:
    """A field names a built-in or computed attribute first, else a trait path."""
    if name in TIME_ATTRIBUTES:
        return FieldRef("time", name)
    if name in attributes:
        return FieldRef("attribute", name)
    return FieldRef("trait", name)


def compile_rule(
    rules: Group,
    attributes: Collection[str],
    resolve_segment: Any = None,
    path: str = "rules",
) -> CompiledRule:
    """Compile ``rules``; ``attributes`` are the names of built-in and computed attributes.

    ``resolve_segment`` maps a reference (id or name) to a segment id, raising ``KeyError``
    for an unknown one; without it references are taken as ids.
    """
    compiler = _Compiler(attributes, resolve_segment)
    root = compiler.group(rules, path)
    if compiler.issues:
        raise RuleValidationError(compiler.issues)
    return CompiledRule(
        root=root,
        dependencies=frozenset(compiler.dependencies),
        aggregates=frozenset(compiler.aggregates),
        segments=frozenset(compiler.segments),
        relative=compiler.relative,
    )


def compile_where(conditions: Sequence[AttributeCondition]) -> list[tuple[str, Predicate]]:
    """``where`` conditions as (property path, predicate) pairs."""
    return [(c.field, Predicate(c)) for c in conditions]


class _Compiler:
    def __init__(self, attributes: Collection[str], resolve_segment: Any) -> None:
        self.attributes = attributes
        self.resolve_segment = resolve_segment
        self.dependencies: set[str] = set()
        self.aggregates: set[AggregateSpec] = set()
        self.segments: set[str] = set()
        self.relative: list[Leaf] = []
        self.issues: list[RuleIssue] = []

    def group(self, group: Group, path: str) -> GroupNode:
        children = [
            self.condition(c, f"{path}.conditions[{i}]") for i, c in enumerate(group.conditions)
        ]
        return GroupNode(group.match == "all", children, path)

    def condition(self, condition: Condition, path: str) -> Node:
        if isinstance(condition, Group):
            return self.group(condition, path)
        if isinstance(condition, Not):
            return NotNode(self.condition(condition.negated, f"{path}.not"), path)
        if isinstance(condition, SegmentReference):
            return self.reference(condition, path)
        if isinstance(condition, EventCondition):
            return self.event(condition, path)
        return self.attribute(condition, path)

    def reference(self, condition: SegmentReference, path: str) -> SegmentLeaf:
        segment_id = condition.segment
        if self.resolve_segment is not None:
            try:
                segment_id = self.resolve_segment(condition.segment)
            except KeyError:
                self.issues.append(
                    RuleIssue(f"{path}.segment", f"unknown segment {condition.segment!r}")
                )
        self.segments.add(segment_id)
        self.dependencies.add("segment:" + segment_id)
        return SegmentLeaf(segment_id, condition.operator == "in", path)

    def attribute(self, condition: AttributeCondition, path: str) -> Leaf:
        ref = resolve_field(condition.field, self.attributes)
        if ref.source == "time" and condition.operator not in TIME_OPERATORS | {
            "exists",
            "not_exists",
        }:
            self.issues.append(
                RuleIssue(
                    f"{path}.operator",
                    f"{condition.field} is a time; use before, after, within_last, "
                    "exists or not_exists",
                )
            )
        return self._leaf(ref, condition, path)

    def event(self, condition: EventCondition, path: str) -> Leaf:
        if condition.aggregate is not None:
            aggregate, prop = condition.aggregate, condition.property
            comparison = AttributeCondition(
                field=aggregate, operator=condition.operator or "gte", value=condition.value
            )
        elif condition.count is not None:
            aggregate, prop = "count", None
            comparison = AttributeCondition(
                field="count", operator=condition.count.operator, value=condition.count.value
            )
        else:
            aggregate, prop = "count", None
            comparison = AttributeCondition(field="count", operator="gte", value=1)
        spec = AggregateSpec.create(
            condition.event, aggregate, prop, condition.where, condition.within_ms
        )
        self.aggregates.add(spec)
        return self._leaf(FieldRef("aggregate", spec.key, spec), comparison, path)

    def _leaf(self, ref: FieldRef, condition: AttributeCondition, path: str) -> Leaf:
        leaf = Leaf(ref, Predicate(condition), path)
        self.dependencies.add(ref.dependency)
        if leaf.predicate.relative:
            self.relative.append(leaf)
        return leaf
