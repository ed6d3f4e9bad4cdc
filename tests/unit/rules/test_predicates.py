"""Every attribute operator against one pool of values of every JSON family.

Each table row names an operator, its operand and the pool entries it holds for; it must
be false for every other entry (missing values and type mismatches included). The
vectorised ``evaluate`` over the whole pool, over each value alone, and ``evaluate_one``
must all agree with the table (``docs/rules.md``).
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from audience_manager.rules.model import AttributeCondition
from audience_manager.rules.predicates import Predicate
from audience_manager.rules.timeparse import parse_timestamp_ms
from audience_manager.rules.values import StringDictionary, ValueVector

NOW = parse_timestamp_ms("2024-03-10T00:00:00Z")
HOUR = 3_600_000

POOL: dict[str, Any] = {
    "missing": None,
    "int 0": 0,
    "int 1": 1,
    "float 1.0": 1.0,
    "int 30": 30,
    "float 30.0": 30.0,
    "float 30.5": 30.5,
    "int -7": -7,
    "int 2**53": 2**53,
    "int 2**53+1": 2**53 + 1,
    "int -(2**53+1)": -(2**53 + 1),
    "float 1e20": 1e20,  # exactly 10**20
    "int 10**20": 10**20,
    "int 10**20+1": 10**20 + 1,
    "true": True,
    "false": False,
    "str '30'": "30",
    "str '1'": "1",
    "str ''": "",
    "str 'abc'": "abc",
    "str 'Abc'": "Abc",
    "str 'xabcx'": "xabcx",
    "str 'café'": "café",
    "str 'true'": "true",
    "str '20240309'": "20240309",  # basic ISO form: not a time
    "str '2024-13-45'": "2024-13-45",  # date shape, impossible date: not a time
    "iso date": "2024-03-01",  # midnight UTC
    "iso 12:00Z": "2024-03-09T12:00:00Z",
    "iso 12:00+02:00": "2024-03-09T12:00:00+02:00",  # 10:00 UTC
    "iso 12:00 no zone": "2024-03-09T12:00:00",  # UTC
    "iso future": "2024-03-10T00:00:01Z",
    "list []": [],
    "list [1, 2]": [1, 2],
    "list [1.0, 2.0]": [1.0, 2.0],
    "list [30]": [30],
    "list ['30']": ["30"],
    "list [true]": [True],
    "list ['abc']": ["abc"],
    "list [[1, 2]]": [[1, 2]],
    "object {}": {},
    "object {a: 1}": {"a": 1},
    "object {a: 1.0}": {"a": 1.0},
    "object {a: true}": {"a": True},
}
LABELS = list(POOL)
VALUES = list(POOL.values())


def labels(prefix: str) -> frozenset[str]:
    return frozenset(label for label in LABELS if label.startswith(prefix))


NUMBERS = labels("int ") | labels("float ")
ISO = labels("iso ")
STRINGS = labels("str ") | ISO
DIGIT_STRINGS = ISO | {"str '30'", "str '1'", "str '20240309'", "str '2024-13-45'"}
LISTS = labels("list ")
OBJECTS = labels("object ")
PRESENT = frozenset(LABELS) - {"missing"}
BEYOND_2_60 = frozenset({"float 1e20", "int 10**20", "int 10**20+1"})
TEN_TO_20 = {"float 1e20", "int 10**20"}

Row = tuple[str, Any, frozenset[str]]


def row(operator: str, operand: Any, holds: set[str] | frozenset[str]) -> Any:
    unknown = set(holds) - set(LABELS)
    assert not unknown, f"not in the pool: {unknown}"
    return pytest.param(operator, operand, frozenset(holds), id=f"{operator} {operand!r}")


def predicate(operator: str, operand: Any = None) -> Predicate:
    return Predicate(AttributeCondition(field="f", operator=operator, value=operand))  # type: ignore[arg-type]


def whole_pool(p: Predicate) -> list[bool]:
    result = p.evaluate(ValueVector.from_values(VALUES), NOW)
    assert result.dtype == np.bool_
    assert len(result) == len(VALUES)
    return [bool(x) for x in result]


def one_value_per_vector(p: Predicate) -> list[bool]:
    return [bool(p.evaluate(ValueVector.from_values([v]), NOW)[0]) for v in VALUES]


def evaluate_one(p: Predicate) -> list[bool]:
    return [p.evaluate_one(v, NOW) for v in VALUES]


EVALUATIONS: list[Any] = [
    pytest.param(whole_pool, id="vectorised"),
    pytest.param(one_value_per_vector, id="singletons"),
    pytest.param(evaluate_one, id="evaluate_one"),
]


def check(
    evaluation: Callable[[Predicate], list[bool]],
    operator: str,
    operand: Any,
    holds: frozenset[str],
) -> None:
    got = evaluation(predicate(operator, operand))
    wrong = {
        label: result
        for label, result in zip(LABELS, got, strict=True)
        if result != (label in holds)
    }
    assert wrong == {}, f"{operator} {operand!r}: rows giving the wrong result: {wrong}"


# -- equality ----------------------------------------------------------------------------

EQUALITY = [
    row("eq", 30, {"int 30", "float 30.0"}),
    row("eq", 30.0, {"int 30", "float 30.0"}),
    row("eq", 1, {"int 1", "float 1.0"}),
    row("eq", "30", {"str '30'"}),
    row("eq", "abc", {"str 'abc'"}),
    row("eq", True, {"true"}),
    row("eq", False, {"false"}),
    row("eq", [1, 2], {"list [1, 2]", "list [1.0, 2.0]"}),
    row("eq", [True], {"list [true]"}),
    row("eq", [], {"list []"}),
    row("eq", {"a": 1}, {"object {a: 1}", "object {a: 1.0}"}),
    row("eq", {}, {"object {}"}),
    row("eq", 2**53, {"int 2**53"}),
    row("eq", 2**53 + 1, {"int 2**53+1"}),
    row("eq", 10**20, TEN_TO_20),
    row("eq", 1e20, TEN_TO_20),
    row("eq", 10**20 + 1, {"int 10**20+1"}),
    row("neq", 30, NUMBERS - {"int 30", "float 30.0"}),
    row("neq", 1, NUMBERS - {"int 1", "float 1.0"}),
    row("neq", "abc", STRINGS - {"str 'abc'"}),
    row("neq", True, {"false"}),
    row("neq", [1, 2], LISTS - {"list [1, 2]", "list [1.0, 2.0]"}),
    row("neq", {"a": 1}, {"object {}", "object {a: true}"}),
    row("neq", 2**53 + 1, NUMBERS - {"int 2**53+1"}),
    row("neq", 1e20, NUMBERS - TEN_TO_20),
]


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize(("operator", "operand", "holds"), EQUALITY)
def test_equality(
    evaluation: Callable[[Predicate], list[bool]], operator: str, operand: Any, holds: Any
) -> None:
    check(evaluation, operator, operand, holds)


# -- ordering and between ----------------------------------------------------------------

SMALL_NUMBERS = {"int 0", "int -7", "int -(2**53+1)"}
STRINGS_BELOW_ABC = DIGIT_STRINGS | {"str '30'", "str '1'", "str ''", "str 'Abc'"}
STRINGS_ABOVE_ABC = {"str 'xabcx'", "str 'café'", "str 'true'"}

ORDERING = [
    row("gt", 1, NUMBERS - SMALL_NUMBERS - {"int 1", "float 1.0"}),
    row("gte", 1, NUMBERS - SMALL_NUMBERS),
    row("gte", 1.0, NUMBERS - SMALL_NUMBERS),
    row("lt", 30, SMALL_NUMBERS | {"int 1", "float 1.0"}),
    row("lte", 30, SMALL_NUMBERS | {"int 1", "float 1.0", "int 30", "float 30.0"}),
    row("gt", 30, BEYOND_2_60 | {"float 30.5", "int 2**53", "int 2**53+1"}),
    row("gt", 2**53, BEYOND_2_60 | {"int 2**53+1"}),
    row("lt", 2**53 + 1, NUMBERS - BEYOND_2_60 - {"int 2**53+1"}),
    row("gte", 2**53 + 1, BEYOND_2_60 | {"int 2**53+1"}),
    row("gt", 1e20, {"int 10**20+1"}),
    row("gte", 10**20, BEYOND_2_60),
    row("lt", 10**20 + 1, NUMBERS - {"int 10**20+1"}),
    row("gt", "abc", STRINGS_ABOVE_ABC),
    row("gte", "abc", STRINGS_ABOVE_ABC | {"str 'abc'"}),
    row("lt", "abc", STRINGS_BELOW_ABC),
    row("lte", "abc", STRINGS_BELOW_ABC | {"str 'abc'"}),
    # Unicode code points, not a locale: "é" (U+00E9) sorts after "z".
    row("gt", "cafz", {"str 'café'", "str 'xabcx'", "str 'true'"}),
    # "30" is a string: compared with strings only, by code point.
    row("gt", "30", (STRINGS - STRINGS_BELOW_ABC) | {"str 'abc'", "str 'Abc'"}),
]

BETWEEN = [
    row("between", [1, 30], {"int 1", "float 1.0", "int 30", "float 30.0"}),
    row("between", [30, 30.5], {"int 30", "float 30.0", "float 30.5"}),
    row("between", [-10, 0.5], {"int 0", "int -7"}),
    row("between", [30.0, 30.0], {"int 30", "float 30.0"}),
    row("between", [2**53 + 1, 2**53 + 1], {"int 2**53+1"}),
    row("between", [-(2**60), 2**60], NUMBERS - BEYOND_2_60),
    row("between", [1e20, 1e20], TEN_TO_20),
    row("between", [10**20, 10**20 + 1], BEYOND_2_60),
]


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize(("operator", "operand", "holds"), ORDERING + BETWEEN)
def test_ordering_and_between(
    evaluation: Callable[[Predicate], list[bool]], operator: str, operand: Any, holds: Any
) -> None:
    check(evaluation, operator, operand, holds)


# -- in / not_in -------------------------------------------------------------------------

MEMBERSHIP = [
    row("in", [30, "abc"], {"int 30", "float 30.0", "str 'abc'"}),
    row("in", [1], {"int 1", "float 1.0"}),
    row("in", [True], {"true"}),
    row("in", ["30", "1"], {"str '30'", "str '1'"}),
    row(
        "in",
        [[1, 2], {"a": 1}],
        {"list [1, 2]", "list [1.0, 2.0]", "object {a: 1}", "object {a: 1.0}"},
    ),
    row("in", [None, 1], {"int 1", "float 1.0"}),
    row("in", [], set()),
    row("in", [2**53 + 1], {"int 2**53+1"}),
    row("in", [1e20, "abc"], TEN_TO_20 | {"str 'abc'"}),
    row("in", [10**20 + 1], {"int 10**20+1"}),
    row("not_in", [30, "abc"], (NUMBERS | STRINGS) - {"int 30", "float 30.0", "str 'abc'"}),
    row("not_in", [1], NUMBERS - {"int 1", "float 1.0"}),
    row("not_in", [True], {"false"}),
    row("not_in", ["abc"], STRINGS - {"str 'abc'"}),
    row("not_in", [[1, 2]], LISTS - {"list [1, 2]", "list [1.0, 2.0]"}),
    row("not_in", [{"a": 1}], {"object {}", "object {a: true}"}),
    row("not_in", [], set()),
    row("not_in", [2**53 + 1], NUMBERS - {"int 2**53+1"}),
    row("not_in", [10**20], NUMBERS - TEN_TO_20),
]


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize(("operator", "operand", "holds"), MEMBERSHIP)
def test_in_and_not_in(
    evaluation: Callable[[Predicate], list[bool]], operator: str, operand: Any, holds: Any
) -> None:
    check(evaluation, operator, operand, holds)


# -- contains / not_contains -------------------------------------------------------------

WITH_BC = {"str 'abc'", "str 'Abc'", "str 'xabcx'"}
LISTS_WITH_1 = {"list [1, 2]", "list [1.0, 2.0]"}

CONTAINS = [
    # A string operand is a substring of a string, and an element of a list (not a substring).
    row("contains", "bc", WITH_BC),
    row("contains", "abc", {"str 'abc'", "str 'xabcx'", "list ['abc']"}),
    row("contains", "30", {"str '30'", "str '20240309'", "list ['30']"}),
    row("contains", "", STRINGS),
    row("contains", 1, LISTS_WITH_1),
    row("contains", 30, {"list [30]"}),
    row("contains", True, {"list [true]"}),
    row("not_contains", "bc", (STRINGS - WITH_BC) | LISTS),
    row("not_contains", "abc", (STRINGS | LISTS) - {"str 'abc'", "str 'xabcx'", "list ['abc']"}),
    row("not_contains", 1, LISTS - LISTS_WITH_1),
    row("not_contains", True, LISTS - {"list [true]"}),
]


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize(("operator", "operand", "holds"), CONTAINS)
def test_contains_and_not_contains(
    evaluation: Callable[[Predicate], list[bool]], operator: str, operand: Any, holds: Any
) -> None:
    check(evaluation, operator, operand, holds)


# -- string operators --------------------------------------------------------------------

ON_MARCH_9 = {"iso 12:00Z", "iso 12:00+02:00", "iso 12:00 no zone"}

STRING_OPERATORS = [
    row("starts_with", "ab", {"str 'abc'"}),
    row("starts_with", "2024-03-09", ON_MARCH_9),
    row("starts_with", "", STRINGS),
    row("ends_with", "bcx", {"str 'xabcx'"}),
    row("ends_with", "é", {"str 'café'"}),
    row("ends_with", "Z", {"iso 12:00Z", "iso future"}),
    # matches is a search, case-sensitive, in RE2 syntax
    row("matches", "abc", {"str 'abc'", "str 'xabcx'"}),
    row("matches", "b", WITH_BC),
    row("matches", "^abc$", {"str 'abc'"}),
    row("matches", "ABC", set()),
    row("matches", "(?i)^abc$", {"str 'abc'", "str 'Abc'"}),
    row("matches", "[0-9]", DIGIT_STRINGS),
    row(
        "matches",
        r"^\p{L}+$",
        {"str 'abc'", "str 'Abc'", "str 'xabcx'", "str 'café'", "str 'true'"},
    ),
    row("matches", r"caf\x{e9}", {"str 'café'"}),
    row("matches", "", STRINGS),
    row("matches", "^1$", {"str '1'"}),
]


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize(("operator", "operand", "holds"), STRING_OPERATORS)
def test_string_operators(
    evaluation: Callable[[Predicate], list[bool]], operator: str, operand: Any, holds: Any
) -> None:
    check(evaluation, operator, operand, holds)


# -- exists / not_exists -----------------------------------------------------------------

EXISTENCE = [
    row("exists", None, PRESENT),
    row("not_exists", None, {"missing"}),
]


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize(("operator", "operand", "holds"), EXISTENCE)
def test_exists_and_not_exists(
    evaluation: Callable[[Predicate], list[bool]], operator: str, operand: Any, holds: Any
) -> None:
    check(evaluation, operator, operand, holds)


# -- time operators (now = 2024-03-10T00:00:00Z) -----------------------------------------

TIMES = [
    row("before", "2024-03-09T11:00:00Z", {"iso date", "iso 12:00+02:00"}),
    row("after", "2024-03-09T11:00:00Z", {"iso 12:00Z", "iso 12:00 no zone", "iso future"}),
    # strict at the instant itself
    row("before", "2024-03-09T12:00:00Z", {"iso date", "iso 12:00+02:00"}),
    row("after", "2024-03-09T12:00:00Z", {"iso future"}),
    # the operand's offset is honoured; a date alone is midnight UTC
    row("before", "2024-03-09T13:00:00+01:00", {"iso date", "iso 12:00+02:00"}),
    row("before", "2024-03-09", {"iso date"}),
    row("after", "2024-03-09", ISO - {"iso date"}),
    row("after", "2024-03-01", ISO - {"iso date"}),
    # with a duration: relative to now
    row("before", "1d", {"iso date"}),
    row("after", "1d", ISO - {"iso date"}),
    row("before", "12h", {"iso date", "iso 12:00+02:00"}),
    row("after", "12h", {"iso future"}),
    # now - d ≤ x ≤ now, both ends included; a future instant is not within the last d
    row("within_last", "12h", {"iso 12:00Z", "iso 12:00 no zone"}),
    row("within_last", "14h", ON_MARCH_9),
    row("within_last", "9d", ISO - {"iso future"}),
    row("within_last", "1s", set()),
]


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize(("operator", "operand", "holds"), TIMES)
def test_time_operators(
    evaluation: Callable[[Predicate], list[bool]], operator: str, operand: Any, holds: Any
) -> None:
    check(evaluation, operator, operand, holds)


# -- time attributes (firstSeen, lastSeen) -----------------------------------------------

TIME_ROWS: list[int | None] = [
    None,
    NOW - 24 * HOUR - 1,
    NOW - 24 * HOUR,
    NOW - 24 * HOUR + 1,
    NOW,
    NOW + 1,
]

TIME_ATTRIBUTE_TABLE = [
    pytest.param("within_last", "1d", [False, False, True, True, True, False], id="within_last"),
    pytest.param("before", "1d", [False, True, False, False, False, False], id="before 1d"),
    pytest.param("after", "1d", [False, False, False, True, True, True], id="after 1d"),
    pytest.param(
        "before", "2024-03-10T00:00:00Z", [False, True, True, True, False, False], id="before iso"
    ),
    pytest.param(
        "after", "2024-03-10T00:00:00Z", [False, False, False, False, False, True], id="after iso"
    ),
    pytest.param("exists", None, [False, True, True, True, True, True], id="exists"),
    pytest.param("not_exists", None, [True, False, False, False, False, False], id="not_exists"),
    # a time is not a number: other operators never hold on it
    pytest.param("eq", NOW, [False] * 6, id="eq"),
    pytest.param("gte", 0, [False] * 6, id="gte"),
]


@pytest.mark.parametrize(("operator", "operand", "expected"), TIME_ATTRIBUTE_TABLE)
def test_time_attribute_rows(operator: str, operand: Any, expected: list[bool]) -> None:
    present = np.array([t is not None for t in TIME_ROWS])
    ms = np.array([0.0 if t is None else float(t) for t in TIME_ROWS])
    p = predicate(operator, operand)

    vectorised = [bool(x) for x in p.evaluate(ValueVector.times(ms, present), NOW)]
    one_by_one = [p.evaluate_one(t, NOW, is_time=True) for t in TIME_ROWS]

    assert vectorised == expected
    assert one_by_one == expected


def test_numbers_are_not_times() -> None:
    # Epoch milliseconds held in a trait are a number, not a time.
    p = predicate("within_last", "1d")

    assert not p.evaluate_one(NOW, NOW)
    assert not p.evaluate(ValueVector.from_values([NOW, float(NOW)]), NOW).any()


# -- shared string dictionaries ----------------------------------------------------------


def test_string_results_stay_right_as_a_shared_dictionary_grows() -> None:
    strings = StringDictionary()
    starts = predicate("starts_with", "ab")
    equal = predicate("eq", "abc")
    different = predicate("neq", "abc")

    first = ValueVector.from_values(["abc", "xyz"], strings)
    assert starts.evaluate(first, NOW).tolist() == [True, False]
    assert equal.evaluate(first, NOW).tolist() == [True, False]
    assert different.evaluate(first, NOW).tolist() == [False, True]

    second = ValueVector.from_values(["abd", "abc", 1, "xyz", "zzz"], strings)
    assert starts.evaluate(second, NOW).tolist() == [True, True, False, False, False]
    assert equal.evaluate(second, NOW).tolist() == [False, True, False, False, False]
    assert different.evaluate(second, NOW).tolist() == [True, False, False, True, True]


def test_times_parsed_through_a_shared_dictionary_follow_its_growth() -> None:
    strings = StringDictionary()
    within = predicate("within_last", "1d")
    ValueVector.from_values(["not a time"], strings)
    assert within.evaluate(ValueVector.from_values(["not a time"], strings), NOW).tolist() == [
        False
    ]

    vector = ValueVector.from_values(["2024-03-09T12:00:00Z", "not a time", "2024-03-01"], strings)
    assert within.evaluate(vector, NOW).tolist() == [True, False, False]
