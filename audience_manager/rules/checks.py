"""Value checks shared by the rule and attribute models: operators, values, paths, windows.

Each check returns the value it accepts or raises ``ValueError`` with a message for people;
the models turn those into issues located at the offending field.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, TypeAlias, TypeGuard

import re2
from pydantic import JsonValue, ValidatorFunctionWrapHandler

from audience_manager.rules.timeparse import MAX_WINDOW_MS, parse_duration_ms, parse_timestamp_ms

__all__ = [
    "BETWEEN",
    "COMPARE_OPERATORS",
    "EVENT_TYPE",
    "MAX_IN_ITEMS",
    "Number",
    "check_attribute_value",
    "check_bounds",
    "check_dotted_path",
    "check_event_type",
    "check_operator",
    "check_window",
    "compile_pattern",
    "duration_or_none",
    "is_number",
    "lists_from_tuples",
    "parse_instant",
    "validate_compare_value",
]

MAX_IN_ITEMS = 10_000
Number: TypeAlias = int | float
COMPARE_OPERATORS: tuple[str, ...] = ("eq", "neq", "gt", "gte", "lt", "lte", "between")
EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
BETWEEN = "between needs [low, high] with low <= high"
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the reason goes into the error message, not to stderr


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 (cached); raise ``ValueError`` with RE2's reason."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid RE2 pattern {pattern!r}: {reason}") from None


def check_operator(value: object, allowed: tuple[str, ...]) -> object:
    """Reject an unknown operator with the list of the known ones."""
    if not isinstance(value, str):
        raise ValueError("operator must be a string")
    if value not in allowed:
        raise ValueError(f"unknown operator {value!r}; expected one of {', '.join(allowed)}")
    return value


def check_dotted_path(value: str) -> str:
    """Reject paths with empty segments such as ``a..b`` or ``.a``."""
    if "" in value.split("."):
        raise ValueError(f"{value!r} is not a dotted path like 'address.city'")
    return value


def check_event_type(value: str) -> str:
    """Check an event type against ``[A-Za-z0-9_.:-]{1,64}``."""
    if EVENT_TYPE.fullmatch(value) is None:
        raise ValueError(f"invalid event type {value!r}: use 1-64 of A-Z a-z 0-9 _ . : -")
    return value


def check_window(value: str | None) -> str | None:
    """Check a ``within`` window: a duration of at most 365 days."""
    if value is not None and parse_duration_ms(value) > MAX_WINDOW_MS:
        raise ValueError(f"window {value!r} is longer than 365d")
    return value


def is_number(value: object) -> TypeGuard[Number]:
    # bool is an int subclass but never a number in rules; NaN and infinities never compare.
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def check_bounds(value: object) -> tuple[Number, Number]:
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = value
        if is_number(low) and is_number(high) and low <= high:
            return low, high
    raise ValueError(BETWEEN)


def validate_compare_value(
    operator: object, value: object, handler: ValidatorFunctionWrapHandler
) -> object:
    # Checked here rather than by pydantic, whose lax mode would take "3" for 3 and word
    # a union's errors for programmers.
    if operator not in COMPARE_OPERATORS:
        return value  # cannot be judged without a valid operator, which is reported itself
    if operator == "between":
        return handler(check_bounds(value))
    if is_number(value):
        return handler(value)
    raise ValueError(f"{operator} needs a number")


def check_attribute_value(operator: str, value: JsonValue) -> None:
    if operator in ("exists", "not_exists"):
        if value is not None:
            raise ValueError(f"{operator} takes no value")
        return
    if value is None:
        hint = " (use not_exists for a missing attribute)" if operator in ("eq", "neq") else ""
        raise ValueError(f"{operator} needs a value{hint}")
    if operator in ("gt", "gte", "lt", "lte"):
        if not (is_number(value) or isinstance(value, str)):
            raise ValueError(f"{operator} needs a number or a string")
    elif operator == "between":
        check_bounds(value)
    elif operator in ("in", "not_in"):
        if not isinstance(value, list):
            raise ValueError(f"{operator} needs a list of values")
        if len(value) > MAX_IN_ITEMS:
            raise ValueError(f"{operator} takes at most {MAX_IN_ITEMS} values, got {len(value)}")
    elif operator in ("contains", "not_contains"):
        if not isinstance(value, str | bool) and not is_number(value):
            raise ValueError(f"{operator} needs a string, a number or a boolean")
    elif operator in ("starts_with", "ends_with", "matches", "before", "after", "within_last"):
        if not isinstance(value, str):
            raise ValueError(f"{operator} needs a string")
        if operator == "matches":
            compile_pattern(value)
        elif operator == "within_last":
            parse_duration_ms(value)
        elif operator in ("before", "after") and duration_or_none(value) is None:
            parse_instant(value, operator)


def lists_from_tuples(value: object) -> object:
    if isinstance(value, list | tuple):
        return [lists_from_tuples(item) for item in value]
    return value


def duration_or_none(value: str) -> int | None:
    try:
        return parse_duration_ms(value)
    except ValueError:
        return None


def parse_instant(value: str, operator: str) -> int:
    # The message names both forms that before/after accept.
    try:
        return parse_timestamp_ms(value)
    except ValueError:
        raise ValueError(
            f"{operator} needs an ISO-8601 timestamp or a duration like '7d', got {value!r}"
        ) from None
