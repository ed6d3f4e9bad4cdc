"""Checks a segment definition against the rule language and the rest of the catalog."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Set
from dataclasses import dataclass
from typing import Any

from audience_manager.catalog.errors import InvalidInput
from audience_manager.catalog.models import SEGMENT_ID_PREFIX
from audience_manager.catalog.schemas import SegmentCreate
from audience_manager.rules.compiler import compile_rule
from audience_manager.rules.deps import evaluation_order
from audience_manager.rules.errors import RuleIssue, RuleValidationError
from audience_manager.rules.model import (
    AttributeCondition,
    Condition,
    Group,
    Not,
    SegmentReference,
    iter_conditions,
    parse_rules,
    rule_to_json,
)

__all__ = ["CheckedRules", "check_segment", "looks_like_segment_id", "rule_fields"]

_SEGMENT_ID = re.compile(re.escape(SEGMENT_ID_PREFIX) + r"[0-9a-f]{16}")


def looks_like_segment_id(value: str) -> bool:
    """Whether ``value`` has the shape of a segment id (so it cannot be a name)."""
    return _SEGMENT_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class CheckedRules:
    """A valid definition's rules as stored, and its references resolved to segment ids."""

    rules: dict[str, Any] | None
    references: dict[str, str]


def check_segment(
    data: SegmentCreate,
    *,
    segment_id: str | None,
    live: Mapping[str, str],
    graph: Mapping[str, Set[str]],
    attributes: Collection[str],
) -> CheckedRules:
    """Validate a segment definition; raise :class:`InvalidInput` naming every problem.

    ``segment_id`` is the segment being replaced (``None`` for a new one), ``live`` maps
    the id of every live segment to its name, ``graph`` maps each live segment to the ids
    it references, and ``attributes`` are the names of built-in and computed attributes.
    """
    issues: list[RuleIssue] = []
    if looks_like_segment_id(data.name):
        issues.append(RuleIssue("name", "must not have the shape of a segment id"))
    if data.type == "STATIC":
        if data.rules is not None:
            issues.append(RuleIssue("rules", "a STATIC segment has no rules: upload its members"))
        if issues:
            raise InvalidInput(issues)
        return CheckedRules(None, {})
    if data.rules is None:
        issues.append(RuleIssue("rules", "a DYNAMIC segment needs rules"))
        raise InvalidInput(issues)
    try:
        group = parse_rules(data.rules, path="rules")
    except RuleValidationError as exc:
        raise InvalidInput([*issues, *exc.issues]) from exc

    by_name = {name: id_ for id_, name in live.items()}
    resolved: dict[str, str] = {}
    nodes = list(_reference_nodes(group, "rules"))
    for path, node in nodes:
        target = node.segment if node.segment in live else by_name.get(node.segment)
        if target is None:
            issues.append(RuleIssue(f"{path}.segment", f"unknown segment {node.segment!r}"))
        elif target == segment_id:
            issues.append(RuleIssue(f"{path}.segment", "a segment cannot reference itself"))
        else:
            resolved[node.segment] = target
    try:
        compile_rule(group, attributes, resolve_segment=lambda ref: resolved.get(ref, ref))
    except RuleValidationError as exc:
        issues.extend(exc.issues)
    if issues:
        raise InvalidInput(issues)
    if segment_id is not None:
        _check_acyclic(segment_id, nodes, resolved, live, graph)
    return CheckedRules(rule_to_json(group), resolved)


def rule_fields(group: Group) -> set[str]:
    """The fields (attributes or traits) a rule's attribute conditions name."""
    return {node.field for node in iter_conditions(group) if isinstance(node, AttributeCondition)}


def _reference_nodes(node: Condition, path: str) -> Iterator[tuple[str, SegmentReference]]:
    # The same paths the rule compiler reports: conditions[i] and .not.
    if isinstance(node, Group):
        for index, child in enumerate(node.conditions):
            yield from _reference_nodes(child, f"{path}.conditions[{index}]")
    elif isinstance(node, Not):
        yield from _reference_nodes(node.negated, f"{path}.not")
    elif isinstance(node, SegmentReference):
        yield path, node


def _check_acyclic(
    segment_id: str,
    nodes: list[tuple[str, SegmentReference]],
    resolved: Mapping[str, str],
    live: Mapping[str, str],
    graph: Mapping[str, Set[str]],
) -> None:
    new_graph = {**graph, segment_id: set(resolved.values())}
    try:
        evaluation_order(new_graph)
    except RuleValidationError as exc:
        issues = []
        for path, node in nodes:
            trail = _path_between(resolved[node.segment], segment_id, new_graph)
            if trail is not None:
                names = " -> ".join(repr(live.get(id_, id_)) for id_ in [segment_id, *trail])
                issues.append(RuleIssue(f"{path}.segment", f"references form a cycle: {names}"))
        raise InvalidInput(issues or exc.issues) from exc


def _path_between(start: str, goal: str, graph: Mapping[str, Set[str]]) -> list[str] | None:
    """The segments from ``start`` to ``goal`` along references, or ``None``."""
    parents: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        if node == goal:
            trail = [node]
            while (parent := parents[trail[-1]]) is not None:
                trail.append(parent)
            return trail[::-1]
        for target in sorted(graph.get(node, ())):
            if target not in parents:
                parents[target] = node
                frontier.append(target)
    return None
