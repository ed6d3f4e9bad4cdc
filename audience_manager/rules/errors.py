"""Validation errors of rules and computed attributes, located by path.

A path names the offending node the way a user would write it, keys dotted and list
indexes in brackets: ``rules.conditions[1].operator``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

__all__ = ["Loc", "RuleIssue", "RuleValidationError", "format_path", "issues_from_validation_error"]

Loc = Sequence[str | int]


@dataclass(frozen=True, slots=True)
class RuleIssue:
    """One problem found in a rule: where it is and what is wrong."""

    path: str
    message: str


class RuleValidationError(Exception):
    """A rule or computed attribute is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: Iterable[RuleIssue]) -> None:
        self.issues: list[RuleIssue] = list(issues)
        super().__init__("; ".join(f"{issue.path}: {issue.message}" for issue in self.issues))


def format_path(root: str, loc: Iterable[str | int]) -> str:
    """Join ``root`` and a location into ``root.key[3].other``."""
    parts = [root]
    for part in loc:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts)


def issues_from_validation_error(
    exc: ValidationError,
    root: str,
    clean_loc: Callable[[Loc], Loc] | None = None,
) -> list[RuleIssue]:
    """Translate pydantic's errors into issues with user-facing paths and messages.

    ``clean_loc`` removes what is not part of the user's document from a location, such
    as the tags pydantic inserts for a discriminated union.
    """
    issues: list[RuleIssue] = []
    for error in exc.errors(include_url=False):
        loc: Loc = error["loc"]
        if clean_loc is not None:
            loc = clean_loc(loc)
        issues.append(RuleIssue(format_path(root, loc), _message(error, loc)))
    return issues


def _message(error: Any, loc: Loc) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    name = loc[-1] if loc and isinstance(loc[-1], str) else None
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        # Our own validators' messages, without pydantic's "Value error, " prefix.
        return str(ctx["error"])
    if kind == "missing":
        return f"'{name}' is required" if name else "a value is required"
    if kind == "extra_forbidden":
        return f"unknown key '{name}'" if name else "unknown key"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}; got {error['input']!r}"
    if kind in ("string_type", "str_type"):
        return "must be a string"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} character(s) long"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind in ("tuple_type", "list_type"):
        return "must be a list"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be an object"
    msg: str = error["msg"]
    return msg
