"""The rule language: models, validation, computed attributes and time parsing.

Pure: nothing here touches a driver, a web framework or settings.
"""

from audience_manager.rules.attributes import (
    ALL_EVENTS,
    BUILTIN_ATTRIBUTES,
    RESERVED_NAMES,
    TIME_ATTRIBUTES,
    AttributeAggregate,
    ComputedAttribute,
    parse_attribute,
)
from audience_manager.rules.errors import RuleIssue, RuleValidationError
from audience_manager.rules.model import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_IN_ITEMS,
    AttributeCondition,
    AttributeOperator,
    CompareOperator,
    CompareValue,
    Condition,
    CountSpec,
    EventCondition,
    Group,
    Not,
    SegmentReference,
    compile_pattern,
    iter_conditions,
    parse_rules,
    rule_to_json,
    segment_references,
)
from audience_manager.rules.timeparse import (
    MAX_DURATION_MS,
    MAX_WINDOW_MS,
    parse_duration_ms,
    parse_timestamp_ms,
    try_timestamp_ms,
)

__all__ = [
    "ALL_EVENTS",
    "BUILTIN_ATTRIBUTES",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_DURATION_MS",
    "MAX_IN_ITEMS",
    "MAX_WINDOW_MS",
    "RESERVED_NAMES",
    "TIME_ATTRIBUTES",
    "AttributeAggregate",
    "AttributeCondition",
    "AttributeOperator",
    "CompareOperator",
    "CompareValue",
    "ComputedAttribute",
    "Condition",
    "CountSpec",
    "EventCondition",
    "Group",
    "Not",
    "RuleIssue",
    "RuleValidationError",
    "SegmentReference",
    "compile_pattern",
    "iter_conditions",
    "parse_attribute",
    "parse_duration_ms",
    "parse_rules",
    "parse_timestamp_ms",
    "rule_to_json",
    "segment_references",
    "try_timestamp_ms",
]
