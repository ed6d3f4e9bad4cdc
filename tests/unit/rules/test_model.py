import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import audience_manager.rules as rules_package
from audience_manager.rules import attributes, errors, model, timeparse
from audience_manager.rules.errors import RuleIssue, RuleValidationError
from audience_manager.rules.model import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_IN_ITEMS,
    AttributeCondition,
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

SEED = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
_ABSENT = object()


def leaf(operator: object = "eq", value: object = 1, field: object = "x") -> dict[str, Any]:
    node: dict[str, Any] = {"field": field, "operator": operator}
    if value is not _ABSENT:
        node["value"] = value
    return node


def rule(*conditions: object, **extra: object) -> dict[str, Any]:
    return {"conditions": list(conditions), **extra}


def issues(data: object) -> list[tuple[str, str]]:
    with pytest.raises(RuleValidationError) as info:
        parse_rules(data)
    return [(issue.path, issue.message) for issue in info.value.issues]


def paths(data: object) -> list[str]:
    return [path for path, _ in issues(data)]


def test_seed_example_is_valid() -> None:
    group = parse_rules(SEED)
    assert group.match == "all"
    assert group.conditions == (AttributeCondition(field="totalSpent", operator="gt", value=1000),)
    assert rule_to_json(group) == SEED


# -- attribute conditions: every operator ----------------------------------------------

VALID_VALUES = [
    ("eq", 1),
    ("eq", 1.5),
    ("eq", "gold"),
    ("eq", True),
    ("eq", [1, "a"]),
    ("eq", {"a": 1}),
    ("neq", "gold"),
    ("neq", False),
    ("gt", 10),
    ("gt", -2.5),
    ("gte", "2024-01-01"),
    ("lt", 0),
    ("lte", "m"),
    ("gt", 10**30),
    ("between", [1, 2]),
    ("between", [1, 1]),
    ("between", [-1.5, 2]),
    ("in", []),
    ("in", ["a", 1, True, None, [1], {"a": 1}]),
    ("in", list(range(MAX_IN_ITEMS))),
    ("not_in", ["a", "b"]),
    ("not_in", list(range(MAX_IN_ITEMS))),
    ("contains", "abc"),
    ("contains", 3),
    ("contains", 2.5),
    ("contains", True),
    ("not_contains", "abc"),
    ("not_contains", False),
    ("starts_with", "ab"),
    ("starts_with", ""),
    ("ends_with", ".com"),
    ("exists", _ABSENT),
    ("exists", None),
    ("not_exists", _ABSENT),
    ("not_exists", None),
    ("matches", "^a.*b$"),
    ("matches", r"\d{3}-\d{4}"),
    ("matches", "(?i)gold"),
    ("before", "7d"),
    ("before", "2024-03-01"),
    ("before", "2024-03-01T10:00:00Z"),
    ("after", "15m"),
    ("after", "2024-03-01T10:00:00+02:00"),
    ("within_last", "30d"),
    ("within_last", "90s"),
    ("within_last", "1000d"),
]


@pytest.mark.parametrize(("operator", "value"), VALID_VALUES)
def test_attribute_operator_accepts(operator: str, value: object) -> None:
    group = parse_rules(rule(leaf(operator, value)))
    condition = group.conditions[0]
    assert isinstance(condition, AttributeCondition)
    assert condition.operator == operator
    assert condition.value == (None if value is _ABSENT else value)


INVALID_VALUES = [
    ("eq", _ABSENT, "eq needs a value (use not_exists for a missing attribute)"),
    ("eq", None, "eq needs a value"),
    ("neq", None, "neq needs a value"),
    ("gt", True, "gt needs a number or a string"),
    ("gte", None, "gte needs a value"),
    ("lt", [1], "lt needs a number or a string"),
    ("lte", {"a": 1}, "lte needs a number or a string"),
    ("gt", float("nan"), "gt needs a number or a string"),
    ("gt", float("inf"), "gt needs a number or a string"),
    ("between", [2, 1], "between needs [low, high] with low <= high"),
    ("between", [1], "between needs [low, high] with low <= high"),
    ("between", [1, 2, 3], "between needs [low, high] with low <= high"),
    ("between", [True, 2], "between needs [low, high] with low <= high"),
    ("between", ["a", "b"], "between needs [low, high] with low <= high"),
    ("between", 5, "between needs [low, high] with low <= high"),
    ("between", {"low": 1, "high": 2}, "between needs [low, high] with low <= high"),
    ("in", "a", "in needs a list of values"),
    ("in", None, "in needs a value"),
    ("not_in", 1, "not_in needs a list of values"),
    ("in", list(range(MAX_IN_ITEMS + 1)), "in takes at most 10000 values, got 10001"),
    ("not_in", list(range(MAX_IN_ITEMS + 1)), "not_in takes at most 10000 values"),
    ("contains", None, "contains needs a value"),
    ("contains", [1], "contains needs a string, a number or a boolean"),
    ("not_contains", {"a": 1}, "not_contains needs a string, a number or a boolean"),
    ("starts_with", 1, "starts_with needs a string"),
    ("ends_with", ["a"], "ends_with needs a string"),
    ("exists", 1, "exists takes no value"),
    ("exists", False, "exists takes no value"),
    ("not_exists", "x", "not_exists takes no value"),
    ("matches", 1, "matches needs a string"),
    ("matches", "(", "invalid RE2 pattern '(': missing ): ("),
    ("matches", "[a-", "invalid RE2 pattern"),
    ("matches", r"(a)\1", "invalid RE2 pattern '(a)\\\\1': invalid escape sequence: \\1"),
    ("matches", "(?=a)", "invalid RE2 pattern '(?=a)': invalid perl operator: (?="),
    ("matches", "(?<!a)b", "invalid RE2 pattern"),
    ("matches", "(a{1000}){1000}", "invalid RE2 pattern"),
    ("before", 1709251200000, "before needs a string"),
    ("before", "yesterday", "before needs an ISO-8601 timestamp or a duration like '7d'"),
    ("after", "0d", "after needs an ISO-8601 timestamp or a duration"),
    ("after", "2024-13-01", "after needs an ISO-8601 timestamp or a duration"),
    ("within_last", "2024-03-01", "invalid duration '2024-03-01'"),
    ("within_last", "0s", "duration must be positive"),
    ("within_last", 7, "within_last needs a string"),
]


@pytest.mark.parametrize(("operator", "value", "message"), INVALID_VALUES)
def test_attribute_operator_rejects(operator: str, value: object, message: str) -> None:
    [(path, text)] = issues(rule(leaf("eq"), leaf(operator, value)))
    assert path == "rules.conditions[1].value"
    assert message in text


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)", "(?!a)", "(?<=a)b", "a++"])
def test_patterns_python_accepts_but_re2_rejects(pattern: str) -> None:
    re.compile(pattern)  # valid for Python's engine...
    with pytest.raises(ValueError, match="invalid RE2 pattern"):
        compile_pattern(pattern)  # ...but user patterns are RE2 only
    [(path, _)] = issues(rule(leaf("matches", pattern)))
    assert path == "rules.conditions[0].value"


def test_compiled_pattern_searches_partially() -> None:
    condition = parse_rules(rule(leaf("matches", "b+c"))).conditions[0]
    assert isinstance(condition, AttributeCondition)
    assert condition.compiled_pattern().search("abbbcd") is not None
    assert condition.compiled_pattern().search("ac") is None
    assert condition.compiled_pattern() is compile_pattern("b+c")


def test_compiled_pattern_only_for_matches() -> None:
    with pytest.raises(TypeError):
        AttributeCondition(field="x", operator="eq", value="a").compiled_pattern()


@pytest.mark.parametrize(
    ("operator", "value", "duration_ms", "instant_ms"),
    [
        ("before", "7d", 7 * 86_400_000, None),
        ("after", "90s", 90_000, None),
        ("within_last", "2h", 7_200_000, None),
        ("before", "2024-03-01", None, 1_709_251_200_000),
        ("after", "2024-03-01T00:00:01.5Z", None, 1_709_251_201_500),
        ("eq", "7d", None, None),
        ("exists", _ABSENT, None, None),
    ],
)
def test_time_values_are_parsed_once(
    operator: str, value: object, duration_ms: int | None, instant_ms: int | None
) -> None:
    condition = parse_rules(rule(leaf(operator, value))).conditions[0]
    assert isinstance(condition, AttributeCondition)
    assert condition.duration_ms == duration_ms
    assert condition.instant_ms == instant_ms


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("", "must be at least 1 character(s) long"),
        ("x" * 257, "must be at most 256 characters long"),
        (".a", "'.a' is not a dotted path"),
        ("a.", "is not a dotted path"),
        ("a..b", "is not a dotted path"),
        (5, "must be a string"),
    ],
)
def test_field_must_be_a_dotted_path(field: object, message: str) -> None:
    [(path, text)] = issues(rule(leaf(field=field)))
    assert path == "rules.conditions[0].field"
    assert message in text


@pytest.mark.parametrize("field", ["x", "address.city", "a.b.c.d", "x" * 256, "with space"])
def test_field_accepts_paths(field: str) -> None:
    parse_rules(rule(leaf(field=field)))


@pytest.mark.parametrize(("operator", "message"), [("foo", "unknown operator 'foo'"), (1, "must")])
def test_unknown_operator(operator: object, message: str) -> None:
    [(path, text)] = issues(rule(leaf(), leaf(operator)))
    assert path == "rules.conditions[1].operator"
    assert message in text
    if operator == "foo":
        assert text.endswith(
            "expected one of eq, neq, gt, gte, lt, lte, between, in, not_in, contains, "
            "not_contains, starts_with, ends_with, exists, not_exists, matches, before, after, "
            "within_last"
        )


def test_tuples_from_python_callers_become_lists() -> None:
    condition = AttributeCondition(field="sum", operator="between", value=(1, 2))
    assert condition.value == [1, 2]


# -- event conditions ------------------------------------------------------------------

VALID_EVENTS = [
    {"event": "purchase"},
    {"event": "app:open.v2-x_y"},
    {"event": "e" * 64},
    {"event": "purchase", "within": "30d"},
    {"event": "purchase", "within": "365d"},
    {"event": "purchase", "count": {"operator": "gte", "value": 3}, "within": "30d"},
    {"event": "purchase", "count": {"operator": "between", "value": [1, 5]}},
    {"event": "purchase", "count": {"operator": "eq", "value": 0}},
    {"event": "purchase", "aggregate": "sum", "property": "amount", "operator": "gt", "value": 500},
    {"event": "p", "aggregate": "avg", "property": "a.b", "operator": "between", "value": [1, 2]},
    {"event": "p", "aggregate": "min", "property": "amount", "operator": "lt", "value": 2.5},
    {"event": "p", "aggregate": "max", "property": "amount", "operator": "neq", "value": 0},
    {"event": "p", "aggregate": "count", "operator": "gte", "value": 2},
    {"event": "purchase", "where": [leaf("gt", 10, "amount"), leaf("exists", _ABSENT, "sku")]},
]


@pytest.mark.parametrize("data", VALID_EVENTS)
def test_event_condition_accepts(data: dict[str, Any]) -> None:
    group = parse_rules(rule(data))
    assert isinstance(group.conditions[0], EventCondition)
    assert parse_rules(rule_to_json(group)) == group


def test_event_condition_fields() -> None:
    condition = parse_rules(
        rule(
            {"event": "purchase", "count": {"operator": "between", "value": [1, 5]}, "within": "2h"}
        )
    ).conditions[0]
    assert isinstance(condition, EventCondition)
    assert condition.count == CountSpec(operator="between", value=(1, 5))
    assert condition.within_ms == 7_200_000
    assert EventCondition(event="purchase").within_ms is None


def ev(**fields: Any) -> dict[str, Any]:
    return {"event": "p", **fields}


def agg(aggregate: str = "sum", **fields: Any) -> dict[str, Any]:
    return ev(aggregate=aggregate, **fields)


INVALID_EVENTS = [
    ({"event": ""}, "event", "invalid event type ''"),
    ({"event": "e" * 65}, "event", "invalid event type"),
    ({"event": "has space"}, "event", "invalid event type"),
    ({"event": 3}, "event", "must be a string"),
    (ev(within="366d"), "within", "window '366d' is longer than 365d"),
    (ev(within="1y"), "within", "invalid duration '1y'"),
    (ev(within="0d"), "within", "duration must be positive"),
    (ev(count={"operator": "gte"}), "count.value", "'value' is required"),
    (ev(count={"operator": "gte", "value": "3"}), "count.value", "gte needs a number"),
    (ev(count={"operator": "gte", "value": True}), "count.value", "gte needs a number"),
    (ev(count={"operator": "gt", "value": [1, 2]}), "count.value", "gt needs a number"),
    (ev(count={"operator": "between", "value": [3, 1]}), "count.value", "low <= high"),
    (ev(count={"operator": "in", "value": [3]}), "count.operator", "unknown operator 'in'"),
    (ev(count={"operator": "gte", "value": 1, "x": 1}), "count.x", "unknown key 'x'"),
    (ev(count=3), "count", "must be an object"),
    (
        agg("count", count={"operator": "gte", "value": 1}, operator="gte", value=1),
        "aggregate",
        "use either count or aggregate, not both",
    ),
    (agg("median", property="a"), "aggregate", "must be one of"),
    (agg(operator="gt", value=1), "property", "aggregate sum needs a property"),
    (agg("count", property="a", operator="gt", value=1), "property", "count takes no property"),
    (ev(property="amount"), "property", "property needs an aggregate"),
    (agg(property="a..b", operator="gt", value=1), "property", "not a dotted path"),
    (agg(property="a", value=1), "operator", "aggregate sum needs an operator"),
    (ev(operator="gt"), "operator", "operator needs an aggregate"),
    (
        agg(property="a", operator="like", value=1),
        "operator",
        "unknown operator 'like'; expected one of eq, neq, gt, gte, lt, lte, between",
    ),
    (agg(property="a", operator="gt"), "value", "aggregate sum needs a value"),
    (ev(value=3), "value", "value needs an aggregate"),
    (agg("max", property="a", operator="between", value=3), "value", "low <= high"),
    (agg("max", property="a", operator="lt", value="3"), "value", "lt needs a number"),
    (ev(where=[leaf("foo")]), "where[0].operator", "unknown operator 'foo'"),
    (ev(where=leaf()), "where", "must be a list"),
    (ev(unknown=1), "unknown", "unknown key 'unknown'"),
]


def test_where_conditions_are_attribute_conditions() -> None:
    assert issues(rule({"event": "p", "where": [{"event": "q"}]})) == [
        ("rules.conditions[0].where[0].field", "'field' is required"),
        ("rules.conditions[0].where[0].operator", "'operator' is required"),
        ("rules.conditions[0].where[0].event", "unknown key 'event'"),
    ]


@pytest.mark.parametrize(("data", "suffix", "message"), INVALID_EVENTS)
def test_event_condition_rejects(data: dict[str, Any], suffix: str, message: str) -> None:
    found = issues(rule(leaf(), data))
    assert [path for path, _ in found] == [f"rules.conditions[1].{suffix}"]
    assert message in found[0][1]


# -- groups, negation, segment references ----------------------------------------------


def test_groups_negation_and_references() -> None:
    group = parse_rules(
        {
            "match": "any",
            "conditions": [
                {"not": leaf("eq", "churned", "status")},
                {"conditions": [{"segment": "vip"}, {"segment": "s-2", "operator": "not_in"}]},
                {"not": {"not": {"segment": "vip"}}},
            ],
        }
    )
    assert group.match == "any"
    negation = group.conditions[0]
    assert isinstance(negation, Not)
    assert negation.negated == AttributeCondition(field="status", operator="eq", value="churned")
    inner = group.conditions[1]
    assert isinstance(inner, Group)
    assert inner.match == "all"
    assert inner.conditions == (
        SegmentReference(segment="vip"),
        SegmentReference(segment="s-2", operator="not_in"),
    )
    assert segment_references(group) == {"vip", "s-2"}


def test_iter_conditions_is_pre_order_over_the_tree() -> None:
    group = parse_rules(
        rule(
            {"conditions": [leaf(field="a"), {"not": leaf(field="b")}]},
            {"event": "p", "where": [leaf(field="w")]},
            leaf(field="c"),
        )
    )
    kinds = [type(node).__name__ for node in iter_conditions(group)]
    assert kinds == [
        "Group",
        "Group",
        "AttributeCondition",
        "Not",
        "AttributeCondition",
        "EventCondition",
        "AttributeCondition",
    ]
    fields = [n.field for n in iter_conditions(group) if isinstance(n, AttributeCondition)]
    assert fields == ["a", "b", "c"]  # where filters are not tree nodes


NEEDS_KIND = "a condition needs one of: field, event, segment, not, conditions"
FIRST = "rules.conditions[0]"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"segment": ""}, [(f"{FIRST}.segment", "must be at least 1 character(s) long")]),
        ({"segment": "s" * 257}, [(f"{FIRST}.segment", "must be at most 256 characters long")]),
        (
            {"segment": "a", "operator": "eq"},
            [(f"{FIRST}.operator", "must be one of 'in' or 'not_in'; got 'eq'")],
        ),
        ({"not": leaf(), "extra": 1}, [(f"{FIRST}.extra", "unknown key 'extra'")]),
        ({"not": None}, [(f"{FIRST}.not", NEEDS_KIND)]),
        ({"zz": 1}, [(FIRST, NEEDS_KIND)]),
        ("x", [(FIRST, NEEDS_KIND)]),
        ({"conditions": []}, [(f"{FIRST}.conditions", "a group needs at least one condition")]),
        ({"conditions": leaf()}, [(f"{FIRST}.conditions", "must be a list")]),
        (
            {"match": "some", "conditions": [leaf()]},
            [(f"{FIRST}.match", "must be one of 'all' or 'any'; got 'some'")],
        ),
        (
            # "event" wins the dispatch; the attribute keys are then judged as an event's.
            {"field": "x", "operator": "eq", "event": "p"},
            [
                (
                    f"{FIRST}.operator",
                    "operator needs an aggregate; to compare the number of events use "
                    '"count": {"operator": ..., "value": ...}',
                ),
                (f"{FIRST}.field", "unknown key 'field'"),
            ],
        ),
    ],
)
def test_node_errors(data: object, expected: list[tuple[str, str]]) -> None:
    assert issues(rule(data)) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "rules"),
        ([leaf()], "rules"),
        ("text", "rules"),
        (leaf(), "rules"),
        ({"not": leaf()}, "rules"),
        (rule(), "rules.conditions"),
        (rule(leaf(), match="both"), "rules.match"),
        ({**rule(leaf()), "name": "x"}, "rules.name"),
    ],
)
def test_root_must_be_a_group(data: object, expected: str) -> None:
    assert paths(data) == [expected]


def test_root_path_is_configurable() -> None:
    with pytest.raises(RuleValidationError) as info:
        parse_rules(rule(leaf("foo")), path="body.rules")
    assert [i.path for i in info.value.issues] == ["body.rules.conditions[0].operator"]


# -- error paths -----------------------------------------------------------------------

ERROR_PATHS = [
    (rule(leaf(), leaf("foo")), "rules.conditions[1].operator"),
    (
        rule({"not": {"conditions": [leaf("gt", None)]}}),
        "rules.conditions[0].not.conditions[0].value",
    ),
    (
        rule(leaf(), leaf(), ev(where=[leaf("bad")])),
        "rules.conditions[2].where[0].operator",
    ),
    (
        rule({"not": ev(where=[leaf(), leaf(), leaf("between", [2, 1])])}),
        "rules.conditions[0].not.where[2].value",
    ),
    (
        rule({"not": {"not": {"segment": "a", "operator": "x"}}}),
        "rules.conditions[0].not.not.operator",
    ),
    (
        rule({"conditions": [{"conditions": [leaf(field="")]}]}),
        "rules.conditions[0].conditions[0].conditions[0].field",
    ),
    # A user's key that equals an internal union tag is still reported as written.
    (rule({"conditions": [leaf()], "Group": 1}), "rules.conditions[0].Group"),
    (rule({"not": leaf(), "Not": 1}), "rules.conditions[0].Not"),
    (
        rule(ev(where=[{**leaf(), "AttributeCondition": 1}])),
        "rules.conditions[0].where[0].AttributeCondition",
    ),
]


@pytest.mark.parametrize(("data", "expected"), ERROR_PATHS)
def test_error_paths(data: object, expected: str) -> None:
    assert paths(data) == [expected]


def test_every_issue_is_reported_at_once() -> None:
    found = issues(rule(leaf("foo"), leaf("gt", True), {"event": "bad event"}, {"segment": ""}))
    assert [path for path, _ in found] == [
        "rules.conditions[0].operator",
        "rules.conditions[1].value",
        "rules.conditions[2].event",
        "rules.conditions[3].segment",
    ]


def test_error_message_lists_issues() -> None:
    error = RuleValidationError(
        [
            RuleIssue("rules.conditions[1].operator", "unknown operator 'foo'"),
            RuleIssue("rules", "x"),
        ]
    )
    assert str(error) == "rules.conditions[1].operator: unknown operator 'foo'; rules: x"
    assert error.issues[0] == RuleIssue("rules.conditions[1].operator", "unknown operator 'foo'")


# -- limits ----------------------------------------------------------------------------


def nested_groups(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = rule(leaf())
    for _ in range(levels - 1):
        node = rule(node)
    return node


def nested_nots(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = leaf()
    for _ in range(levels - 1):
        node = {"not": node}
    return rule(node)


def test_depth_limit_counts_groups() -> None:
    parse_rules(nested_groups(MAX_DEPTH))
    assert issues(nested_groups(MAX_DEPTH + 1)) == [
        ("rules" + ".conditions[0]" * MAX_DEPTH, "rules may nest at most 8 levels deep")
    ]


def test_depth_limit_counts_not() -> None:
    parse_rules(nested_nots(MAX_DEPTH))
    assert paths(nested_nots(MAX_DEPTH + 1)) == ["rules.conditions[0]" + ".not" * (MAX_DEPTH - 1)]


def test_depth_limit_mixes_groups_and_not() -> None:
    parse_rules(rule({"not": nested_groups(MAX_DEPTH - 2)}))
    assert paths(rule({"not": nested_groups(MAX_DEPTH - 1)})) == [
        "rules.conditions[0].not" + ".conditions[0]" * (MAX_DEPTH - 2)
    ]


def test_depth_limit_rejects_very_deep_documents_quickly() -> None:
    assert len(issues(nested_groups(10_000))) == 1


@pytest.mark.parametrize(
    ("builder", "first_offender"),
    [
        (lambda n: rule(*[leaf()] * n), lambda n: f"rules.conditions[{n - 1}]"),
        (
            lambda n: rule({"conditions": [leaf()] * (n - 1)}),
            lambda n: f"rules.conditions[0].conditions[{n - 2}]",
        ),
        (
            lambda n: rule({"event": "p", "where": [leaf()] * (n - 1)}),
            lambda n: f"rules.conditions[0].where[{n - 2}]",
        ),
        (
            lambda n: rule(*[{"not": leaf()}] * (n // 2), *[leaf()] * (n % 2)),
            lambda n: (
                f"rules.conditions[{n // 2}]" if n % 2 else f"rules.conditions[{n // 2 - 1}].not"
            ),
        ),
    ],
    ids=["leaves", "nested-group", "where", "not"],
)
def test_condition_limit(builder: Any, first_offender: Any) -> None:
    parse_rules(builder(MAX_CONDITIONS))
    assert issues(builder(MAX_CONDITIONS + 1)) == [
        (first_offender(MAX_CONDITIONS + 1), "a rule may have at most 200 conditions")
    ]


def test_limits_are_checked_on_built_models_too() -> None:
    deep = parse_rules(nested_groups(MAX_DEPTH))
    assert parse_rules(deep) is deep
    assert paths(rule(deep)) == ["rules" + ".conditions[0]" * MAX_DEPTH]


# -- built models, JSON round trip -----------------------------------------------------


def test_accepts_built_models() -> None:
    condition = AttributeCondition(field="x", operator="exists")
    negation = Not(negated=SegmentReference(segment="vip"))
    group = parse_rules({"conditions": [condition, negation, EventCondition(event="p")]})
    assert group.conditions == (condition, negation, EventCondition(event="p"))
    assert parse_rules(group) is group


COMPLEX = {
    "match": "any",
    "conditions": [
        {"field": "totalSpent", "operator": "gt", "value": 1000},
        {"not": {"field": "plan", "operator": "in", "value": ["free", "trial"]}},
        {
            "conditions": [
                {
                    "event": "purchase",
                    "where": [{"field": "amount", "operator": "between", "value": [10, 20.5]}],
                    "count": {"operator": "gte", "value": 3},
                    "within": "30d",
                },
                {
                    "event": "purchase",
                    "aggregate": "sum",
                    "property": "amount",
                    "operator": "gt",
                    "value": 500,
                },
                {"segment": "vip", "operator": "not_in"},
                {"field": "lastSeen", "operator": "within_last", "value": "7d"},
                {"field": "email", "operator": "matches", "value": "@example\\.com$"},
                {"field": "signup", "operator": "before", "value": "2024-01-01T00:00:00Z"},
                {"field": "nickname", "operator": "not_exists"},
            ],
        },
    ],
}


def test_round_trip() -> None:
    group = parse_rules(COMPLEX)
    as_json = rule_to_json(group)
    assert as_json == COMPLEX
    assert json.loads(json.dumps(as_json)) == as_json
    assert parse_rules(as_json) == group


def test_models_are_frozen() -> None:
    condition = parse_rules(SEED).conditions[0]
    assert isinstance(condition, AttributeCondition)
    with pytest.raises(ValueError, match="frozen"):
        condition.field = "other"  # type: ignore[misc]


_scalars = st.one_of(
    st.integers(-(10**6), 10**6),
    st.text(max_size=5),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
_leaves = st.one_of(
    st.builds(leaf, st.sampled_from(["eq", "neq", "contains"]), _scalars),
    st.builds(leaf, st.sampled_from(["in", "not_in"]), st.lists(_scalars, max_size=3)),
    st.builds(leaf, st.sampled_from(["exists", "not_exists"]), st.just(_ABSENT)),
    st.builds(lambda s: {"segment": s}, st.text(min_size=1, max_size=5)),
    st.builds(
        lambda n: {"event": "p", "count": {"operator": "gte", "value": n}}, st.integers(0, 9)
    ),
)
_trees = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.builds(lambda c: {"not": c}, children),
        st.builds(
            lambda m, cs: {"match": m, "conditions": cs},
            st.sampled_from(["all", "any"]),
            st.lists(children, min_size=1, max_size=3),
        ),
    ),
    max_leaves=12,
)


def _depth(node: Any) -> int:
    if isinstance(node, dict) and "conditions" in node:
        return 1 + max(_depth(child) for child in node["conditions"])
    if isinstance(node, dict) and "not" in node:
        return 1 + _depth(node["not"])
    return 0


@settings(max_examples=60, deadline=None)
@given(st.lists(_trees, min_size=1, max_size=3))
def test_round_trip_property(conditions: list[Any]) -> None:
    data = rule(*conditions)
    depth = _depth(data)
    if depth > MAX_DEPTH:
        with pytest.raises(RuleValidationError, match="levels deep"):
            parse_rules(data)
        return
    group = parse_rules(data)
    assert rule_to_json(group) == data
    assert parse_rules(rule_to_json(group)) == group


# -- public surface --------------------------------------------------------------------


@pytest.mark.parametrize("module", [model, errors, attributes, timeparse])
def test_package_exports_every_public_name(module: Any) -> None:
    missing = set(module.__all__) - set(rules_package.__all__)
    assert not missing
    for name in rules_package.__all__:
        assert hasattr(rules_package, name)
