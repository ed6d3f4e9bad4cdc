"""Which segments an effect can change, and the order to evaluate them in."""

from __future__ import annotations

from collections.abc import Mapping, Set

from audience_manager.rules.errors import RuleIssue, RuleValidationError

__all__ = ["DependencyIndex", "check_acyclic", "evaluation_order"]


def evaluation_order(references: Mapping[str, Set[str]]) -> list[str]:
    """Segments ordered so every segment comes after the segments it references.

    ``references`` maps a segment id to the ids it references; unknown ids are ignored.
    Raises :class:`RuleValidationError` on a cycle.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, trail: list[str]) -> None:
        mark = state.get(node)
        if mark == 2:
            return
        if mark == 1:
            cycle = [*trail[trail.index(node) :], node]
            raise RuleValidationError(
                [RuleIssue("rules", "segment references form a cycle: " + " -> ".join(cycle))]
            )
        state[node] = 1
        for target in sorted(references.get(node, ())):
            if target in references:
                visit(target, [*trail, node])
        state[node] = 2
        order.append(node)

    for node in sorted(references):
        visit(node, [])
    return order


def check_acyclic(segment_id: str, references: Set[str], others: Mapping[str, Set[str]]) -> None:
    """Reject ``segment_id`` referencing itself or closing a cycle with ``others``."""
    if segment_id in references:
        raise RuleValidationError([RuleIssue("rules", "a segment cannot reference itself")])
    graph = {**others, segment_id: references}
    evaluation_order(graph)


class DependencyIndex:
    """Dependency key (``trait:plan``, ``aggregate:…``, ``segment:s1``) → segment ids."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[str]] = {}
        self._keys: dict[str, frozenset[str]] = {}

    def assign(self, segment_id: str, keys: frozenset[str]) -> None:
        """Record the keys ``segment_id`` depends on (replacing earlier ones)."""
        self.remove(segment_id)
        self._keys[segment_id] = keys
        for key in keys:
            self._by_key.setdefault(key, set()).add(segment_id)

    def remove(self, segment_id: str) -> None:
        for key in self._keys.pop(segment_id, frozenset()):
            dependents = self._by_key.get(key)
            if dependents is not None:
                dependents.discard(segment_id)
                if not dependents:
                    del self._by_key[key]

    def affected(self, keys: Set[str]) -> set[str]:
        """Segments depending on any of ``keys``."""
        out: set[str] = set()
        for key in keys:
            out |= self._by_key.get(key, set())
        return out
