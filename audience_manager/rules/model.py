"""The rule language: groups, negation, attribute, event and segment conditions.

``parse_rules`` is the entry point. It checks the size limits on the raw document first,
then validates it into frozen models, and reports every problem as a ``RuleIssue`` whose
path names the offending node (``rules.conditions[1].operator``).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from audience_manager.rules.checks import (
    COMPARE_OPERATORS,
    MAX_IN_ITEMS,
    Number,
    check_attribute_value,
    check_dotted_path,
    check_event_type,
    check_operator,
    check_window,
    compile_pattern,
    duration_or_none,
    lists_from_tuples,
    validate_compare_value,
)
from audience_manager.rules.errors import (
    Loc,
    RuleIssue,
    RuleValidationError,
    issues_from_validation_error,
)
from audience_manager.rules.timeparse import parse_duration_ms, parse_timestamp_ms

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_IN_ITEMS",
    "AttributeCondition",
    "AttributeOperator",
    "CompareOperator",
    "CompareValue",
    "Condition",
    "CountSpec",
    "EventCondition",
    "Group",
    "Not",
    "SegmentReference",
    "check_where",
    "compile_pattern",
    "iter_conditions",
    "parse_rules",
    "rule_to_json",
    "segment_references",
]

MAX_DEPTH = 8
MAX_CONDITIONS = 200

AttributeOperator = Literal[
    "eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains",
    "not_contains", "starts_with", "ends_with", "exists", "not_exists", "matches",
    "before", "after", "within_last",
]  # fmt: skip
CompareOperator = Literal["eq", "neq", "gt", "gte", "lt", "lte", "between"]
EventAggregate = Literal["count", "sum", "min", "max", "avg"]
CompareValue: TypeAlias = Number | tuple[Number, Number]
"""A count or aggregate bound: a number, or ``(low, high)`` for ``between``."""

_ATTRIBUTE_OPERATORS: tuple[str, ...] = get_args(AttributeOperator)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttributeCondition(_Frozen):
    """``{"field", "operator", "value"}`` on a trait or an attribute (or event property)."""

    field: str = Field(min_length=1, max_length=256)
    operator: AttributeOperator
    value: JsonValue = Field(default=None, validate_default=True)

    _duration_ms: int | None = PrivateAttr(default=None)
    _instant_ms: int | None = PrivateAttr(default=None)

    _check_field = field_validator("field")(check_dotted_path)

    @field_validator("operator", mode="before")
    @classmethod
    def _known_operator(cls, value: object) -> object:
        return check_operator(value, _ATTRIBUTE_OPERATORS)

    @field_validator("value", mode="before")
    @classmethod
    def _tuples_as_lists(cls, value: object) -> object:
        # Python callers may pass a count's ``(low, high)``; JSON has only lists.
        return lists_from_tuples(value)

    @field_validator("value")
    @classmethod
    def _value_fits_operator(cls, value: JsonValue, info: ValidationInfo) -> JsonValue:
        operator = info.data.get("operator")
        if operator is not None:  # an invalid operator is reported on its own
            check_attribute_value(operator, value)
        return value

    @model_validator(mode="after")
    def _parse_times(self) -> AttributeCondition:
        # Parsed once here so that evaluators never parse per profile.
        if self.operator in ("before", "after", "within_last") and isinstance(self.value, str):
            self._duration_ms = duration_or_none(self.value)
            if self._duration_ms is None and self.operator != "within_last":
                self._instant_ms = parse_timestamp_ms(self.value)
        return self

    @property
    def duration_ms(self) -> int | None:
        """For ``before``/``after``/``within_last`` given a duration: its milliseconds."""
        return self._duration_ms

    @property
    def instant_ms(self) -> int | None:
        """For ``before``/``after`` given an ISO-8601 value: its epoch milliseconds."""
        return self._instant_ms

    def compiled_pattern(self) -> Any:
        """The compiled RE2 pattern of a ``matches`` condition (use its ``search``)."""
        if self.operator != "matches" or not isinstance(self.value, str):
            raise TypeError(f"{self.operator} condition has no pattern")
        return compile_pattern(self.value)


class CountSpec(_Frozen):
    """``{"operator", "value"}`` compared with the number of matching events."""

    operator: CompareOperator
    value: CompareValue

    @field_validator("operator", mode="before")
    @classmethod
    def _known_operator(cls, value: object) -> object:
        return check_operator(value, COMPARE_OPERATORS)

    @field_validator("value", mode="wrap")
    @classmethod
    def _value_fits_operator(
        cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> object:
        return validate_compare_value(info.data.get("operator"), value, handler)


def check_where(conditions: tuple[AttributeCondition, ...]) -> tuple[AttributeCondition, ...]:
    """Reject clock-relative filters: a ``where`` is decided once, when the event arrives.

    ``within_last`` and ``before``/``after`` a duration would need every past event kept to
    be re-decided as time passes; a window on the event itself (``within``) says the same.
    """
    for index, condition in enumerate(conditions):
        if condition.operator == "within_last" or (
            condition.operator in ("before", "after") and condition.duration_ms is not None
        ):
            raise ValueError(
                f"condition {index} uses {condition.operator} with a duration, but a where "
                "filter is decided when the event arrives; use the within window of the "
                "event condition, or an ISO-8601 instant"
            )
    return conditions


class EventCondition(_Frozen):
    """Behaviour: events of one type, filtered by ``where``, counted or aggregated.

    With neither ``count`` nor ``aggregate`` it means "at least one such event".
    """

    event: str
    where: tuple[AttributeCondition, ...] = ()
    count: CountSpec | None = None
    aggregate: EventAggregate | None = Field(default=None, validate_default=True)
    property: str | None = Field(default=None, validate_default=True)
    operator: CompareOperator | None = Field(default=None, validate_default=True)
    value: CompareValue | None = Field(default=None, validate_default=True)
    within: str | None = None

    _check_event = field_validator("event")(check_event_type)
    _check_within = field_validator("within")(check_window)
    _check_where = field_validator("where")(check_where)

    @field_validator("aggregate")
    @classmethod
    def _not_with_count(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("count") is not None:
            raise ValueError("use either count or aggregate, not both")
        return value

    @field_validator("property")
    @classmethod
    def _property_fits_aggregate(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "aggregate" not in info.data:  # the aggregate itself is invalid
            return value
        aggregate = info.data["aggregate"]
        if value is None and aggregate not in (None, "count"):
            raise ValueError(f"aggregate {aggregate} needs a property")
        if value is not None and aggregate is None:
            raise ValueError("property needs an aggregate (sum, min, max or avg)")
        if value is not None and aggregate == "count":
            raise ValueError("aggregate count takes no property")
        return None if value is None else check_dotted_path(value)

    @field_validator("operator", mode="before")
    @classmethod
    def _operator_fits_aggregate(cls, value: object, info: ValidationInfo) -> object:
        aggregate = info.data.get("aggregate")
        if value is None and aggregate is not None:
            raise ValueError(f"aggregate {aggregate} needs an operator")
        if value is not None and aggregate is None and "aggregate" in info.data:
            raise ValueError(
                "operator needs an aggregate; to compare the number of events "
                'use "count": {"operator": ..., "value": ...}'
            )
        return None if value is None else check_operator(value, COMPARE_OPERATORS)

    @field_validator("value", mode="wrap")
    @classmethod
    def _value_fits_aggregate(
        cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> object:
        aggregate = info.data.get("aggregate")
        if value is None:
            if aggregate is not None:
                raise ValueError(f"aggregate {aggregate} needs a value")
            return None
        if aggregate is None and "aggregate" in info.data:
            raise ValueError("value needs an aggregate")
        return validate_compare_value(info.data.get("operator"), value, handler)

    @builtins.property  # the ``property`` field shadows the builtin in this class body
    def within_ms(self) -> int | None:
        """The window in milliseconds, or ``None`` for all time."""
        return None if self.within is None else parse_duration_ms(self.within)


class SegmentReference(_Frozen):
    """Membership of another segment, by id or name."""

    segment: str = Field(min_length=1, max_length=256)
    operator: Literal["in", "not_in"] = "in"


class Not(BaseModel):
    """``{"not": <condition>}``."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    negated: Condition = Field(alias="not")


class Group(_Frozen):
    """``{"match": "all"|"any", "conditions": [...]}``; ``all`` is the default."""

    match: Literal["all", "any"] = "all"
    conditions: tuple[Condition, ...]

    @field_validator("conditions")
    @classmethod
    def _not_empty(cls, value: tuple[Condition, ...]) -> tuple[Condition, ...]:
        if not value:
            raise ValueError("a group needs at least one condition")
        return value


# Discriminator keys, in priority order, and the tag of each model in the union below.
_KEYS = (
    ("conditions", "Group"),
    ("not", "Not"),
    ("event", "EventCondition"),
    ("segment", "SegmentReference"),
    ("field", "AttributeCondition"),
)
_TAGS = frozenset(tag for _, tag in _KEYS)


def _condition_tag(value: object) -> str | None:
    if isinstance(value, Mapping):
        return next((tag for key, tag in _KEYS if key in value), None)
    name = type(value).__name__
    return name if name in _TAGS and isinstance(value, BaseModel) else None


Condition: TypeAlias = Annotated[
    Annotated[Group, Tag("Group")]
    | Annotated[Not, Tag("Not")]
    | Annotated[AttributeCondition, Tag("AttributeCondition")]
    | Annotated[EventCondition, Tag("EventCondition")]
    | Annotated[SegmentReference, Tag("SegmentReference")],
    Discriminator(
        _condition_tag,
        custom_error_type="condition_kind",
        custom_error_message="a condition needs one of: field, event, segment, not, conditions",
    ),
]
Not.model_rebuild()
Group.model_rebuild()


def parse_rules(data: object, *, path: str = "rules") -> Group:
    """Validate a rule document (decoded JSON, or a ``Group``) into a ``Group``.

    The root must be a group (``{"conditions": [...]}``). Raises ``RuleValidationError``
    listing every problem, each at the path of its node, e.g. ``rules.conditions[1].value``.
    """
    raw = _as_raw(data)
    if not isinstance(raw, Mapping) or "conditions" not in raw:
        raise RuleValidationError(
            [RuleIssue(path, 'the root of a rule must be a group: {"conditions": [...]}')]
        )
    limits = _LimitCheck()
    limits.children(raw["conditions"], path, 1)
    if limits.issues:
        # Stop before pydantic: an oversized document is refused without further work.
        raise RuleValidationError(limits.issues)
    try:
        return Group.model_validate(data)
    except ValidationError as exc:
        raise RuleValidationError(issues_from_validation_error(exc, path, _clean_loc)) from exc


def rule_to_json(group: Group) -> dict[str, Any]:
    """The JSON form of a rule; ``parse_rules`` reads it back to an equal ``Group``."""
    return group.model_dump(mode="json", by_alias=True, exclude_unset=True)


def iter_conditions(group: Group) -> Iterator[Condition]:
    """Every node of the rule tree in pre-order, the root group first.

    The ``where`` filters of event conditions are part of their node, not yielded.
    """
    stack: list[Condition] = [group]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Group):
            stack.extend(reversed(node.conditions))
        elif isinstance(node, Not):
            stack.append(node.negated)


def segment_references(group: Group) -> set[str]:
    """The ids or names of every segment the rule refers to, negated or not."""
    return {node.segment for node in iter_conditions(group) if isinstance(node, SegmentReference)}


def _as_raw(data: object) -> object:
    return data.model_dump(by_alias=True) if isinstance(data, BaseModel) else data


class _LimitCheck:
    """Walks the raw document, counting nodes and levels, before any model is built.

    The root group is level 1 and is not counted; every other group, ``not``, leaf and
    ``where`` condition counts once, and each group or ``not`` opens a level.
    """

    def __init__(self) -> None:
        self.issues: list[RuleIssue] = []
        self._count = 0
        self._too_deep = False

    def children(self, items: object, path: str, depth: int) -> None:
        if isinstance(items, list | tuple):
            for index, child in enumerate(items):
                self.node(child, f"{path}.conditions[{index}]", depth + 1)

    def node(self, node: object, path: str, depth: int) -> None:
        if not self._counted(path):
            return
        node = _as_raw(node)
        if not isinstance(node, Mapping):
            return
        if "conditions" in node or "not" in node:
            if depth > MAX_DEPTH:
                if not self._too_deep:
                    self._too_deep = True
                    self.issues.append(
                        RuleIssue(path, f"rules may nest at most {MAX_DEPTH} levels deep")
                    )
                return
            if "conditions" in node:
                self.children(node["conditions"], path, depth)
            else:
                self.node(node["not"], f"{path}.not", depth + 1)
        elif "event" in node and isinstance(node.get("where"), list | tuple):
            for index in range(len(node["where"])):
                if not self._counted(f"{path}.where[{index}]"):
                    return

    def _counted(self, path: str) -> bool:
        """Count one node; ``False`` once the limit is passed (the walk then stops)."""
        self._count += 1
        if self._count == MAX_CONDITIONS + 1:
            self.issues.append(
                RuleIssue(path, f"a rule may have at most {MAX_CONDITIONS} conditions")
            )
        return self._count <= MAX_CONDITIONS


def _clean_loc(loc: Loc) -> Loc:
    """Drop the union tags pydantic puts after each condition position in a location.

    Tags are recognised only where a condition can stand (``conditions[i]`` of a group,
    ``not`` of a negation), so a user's key that happens to equal a tag is kept.
    """
    cleaned: list[str | int] = []
    model: str | None = "Group"  # the model the next part belongs to; None outside the tree
    at_condition = False
    for part in loc:
        if at_condition:
            at_condition = False
            if isinstance(part, str) and part in _TAGS:
                model = part
                continue
        cleaned.append(part)
        if model == "Group" and part == "conditions":
            model = "conditions"
        elif (model == "conditions" and isinstance(part, int)) or (model, part) == ("Not", "not"):
            at_condition = True
        else:
            model = None
    return cleaned
