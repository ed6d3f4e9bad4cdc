"""Computed attributes: named aggregates over a user's events (``/api/attributes``).

A rule's ``field`` names a built-in or computed attribute first, else a trait. The
built-ins exist from the start so that the seed's example segment works on a fresh install.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from audience_manager.rules.checks import check_dotted_path, check_event_type, check_window
from audience_manager.rules.errors import (
    RuleIssue,
    RuleValidationError,
    issues_from_validation_error,
)
from audience_manager.rules.model import MAX_CONDITIONS, AttributeCondition, check_where
from audience_manager.rules.timeparse import parse_duration_ms

__all__ = [
    "ALL_EVENTS",
    "BUILTIN_ATTRIBUTES",
    "RESERVED_NAMES",
    "TIME_ATTRIBUTES",
    "AttributeAggregate",
    "ComputedAttribute",
    "parse_attribute",
]

AttributeAggregate = Literal["count", "sum", "min", "max", "avg", "first", "last", "distinct_count"]
ALL_EVENTS = "*"
"""The ``eventType`` of an attribute computed over every event."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class ComputedAttribute(BaseModel):
    """An aggregate of one event type's property, optionally filtered and windowed.

    ``count`` takes no property; every other aggregate needs one (a dotted path into the
    event's properties). ``within`` is a sliding window on event time, up to ``365d``.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    name: str
    event_type: str
    aggregate: AttributeAggregate
    property: str | None = Field(default=None, validate_default=True)
    where: tuple[AttributeCondition, ...] = Field(default=(), max_length=MAX_CONDITIONS)
    within: str | None = None
    description: str = ""

    _check_within = field_validator("within")(check_window)
    _check_where = field_validator("where")(check_where)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if _NAME.fullmatch(value) is None:
            raise ValueError(
                f"invalid name {value!r}: start with a letter or _, then up to 63 letters, "
                "digits or _"
            )
        return value

    @field_validator("event_type")
    @classmethod
    def _valid_event_type(cls, value: str) -> str:
        return value if value == ALL_EVENTS else check_event_type(value)

    @field_validator("property")
    @classmethod
    def _property_fits_aggregate(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "aggregate" not in info.data:  # the aggregate itself is invalid
            return value
        aggregate = info.data["aggregate"]
        if aggregate == "count":
            if value is not None:
                raise ValueError("aggregate count takes no property")
            return None
        if value is None:
            raise ValueError(f"aggregate {aggregate} needs a property")
        return check_dotted_path(value)

    @builtins.property  # the ``property`` field shadows the builtin in this class body
    def within_ms(self) -> int | None:
        """The window in milliseconds, or ``None`` for all time."""
        return None if self.within is None else parse_duration_ms(self.within)


BUILTIN_ATTRIBUTES: dict[str, ComputedAttribute] = {
    attribute.name: attribute
    for attribute in (
        ComputedAttribute(
            name="totalSpent",
            event_type="purchase",
            aggregate="sum",
            property="amount",
            description="Sum of the amount of every purchase (0 with none).",
        ),
        ComputedAttribute(
            name="purchaseCount",
            event_type="purchase",
            aggregate="count",
            description="Number of purchases.",
        ),
        ComputedAttribute(
            name="eventCount",
            event_type=ALL_EVENTS,
            aggregate="count",
            description="Number of events of any type.",
        ),
    )
}
"""Aggregates every installation has; they cannot be redefined."""

TIME_ATTRIBUTES = frozenset({"firstSeen", "lastSeen"})
"""Built-in attributes holding the event time (epoch ms) of a user's first and last event."""

RESERVED_NAMES = frozenset(BUILTIN_ATTRIBUTES) | TIME_ATTRIBUTES
"""Names a computed attribute may not take."""


def parse_attribute(data: object, *, path: str = "attribute") -> ComputedAttribute:
    """Validate a computed attribute definition (decoded JSON, camelCase keys).

    Raises ``RuleValidationError`` listing every problem at its path
    (``attribute.eventType``); a reserved name (a built-in) is refused too.
    """
    issues: list[RuleIssue] = []
    name = data.get("name") if isinstance(data, Mapping) else getattr(data, "name", None)
    if isinstance(name, str) and name in RESERVED_NAMES:
        issues.append(RuleIssue(f"{path}.name", f"{name!r} is a built-in attribute"))
    try:
        attribute = ComputedAttribute.model_validate(data)
    except ValidationError as exc:
        issues.extend(issues_from_validation_error(exc, path))
        raise RuleValidationError(issues) from exc
    if issues:
        raise RuleValidationError(issues)
    return attribute
