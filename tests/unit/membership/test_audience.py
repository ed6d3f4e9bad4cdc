from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from audience_manager.membership import (
    MAX_AUDIENCE_DEPTH,
    MAX_AUDIENCE_SEGMENTS,
    AndExpression,
    AudienceError,
    AudienceExpression,
    NotExpression,
    OrExpression,
    SegmentMembership,
    SegmentReference,
    UnknownSegment,
    count,
    evaluate,
    parse_audience,
    segment_ids,
)

EXPRESSION = TypeAdapter(AudienceExpression)
SEGMENTS = ["a", "b", "c", "d", "e"]


def nested_not(depth: int) -> Any:
    data: Any = "a"
    for _ in range(depth):
        data = {"not": data}
    return data


leaves = st.sampled_from(SEGMENTS).flatmap(lambda s: st.sampled_from([s, {"segment": s}]))
expressions = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=5).map(lambda items: {"and": items}),
        st.lists(children, min_size=1, max_size=5).map(lambda items: {"or": items}),
        children.map(lambda item: {"not": item}),
    ),
    max_leaves=15,
)


# -- parsing -------------------------------------------------------------------------------


def test_parses_every_form_into_frozen_models() -> None:
    expr = parse_audience({"and": ["a", {"segment": "b"}, {"not": {"or": ["c", "d"]}}]})
    assert expr == AndExpression(
        operands=(
            SegmentReference(segment="a"),
            SegmentReference(segment="b"),
            NotExpression(operand=OrExpression(operands=("c", "d"))),
        )
    )
    assert parse_audience("solo") == SegmentReference(segment="solo")
    with pytest.raises(ValidationError):
        expr.operands = ()  # type: ignore[misc]
    assert hash(expr) == hash(parse_audience(expr.model_dump(mode="json")))


def test_models_dump_to_the_wire_shape() -> None:
    data = {"or": [{"segment": "a"}, {"not": {"segment": "b"}}, {"and": [{"segment": "c"}]}]}
    expr = parse_audience(data)
    assert expr.model_dump(mode="json") == data
    assert EXPRESSION.validate_python(data) == expr
    assert parse_audience(expr) == expr


@pytest.mark.parametrize(
    ("data", "issues"),
    [
        ({"and": []}, [("expression.and", "needs at least one operand")]),
        ({"or": "a"}, [("expression.or", "expected an array of expressions, got a string")]),
        ({"segment": ""}, [("expression.segment", "a segment id must not be empty")]),
        ({"segment": 3}, [("expression.segment", "expected a segment id, got a number")]),
        ({"and": ["a"], "x": 1}, [("expression.x", "unexpected key")]),
        (
            {"and": ["a"], "or": ["b"]},
            [("expression", "has 'and' and 'or': use one object per operator")],
        ),
        ("x" * 257, [("expression", "a segment id is at most 256 characters")]),
    ],
)
def test_invalid_expressions_name_the_path(data: object, issues: list[tuple[str, str]]) -> None:
    with pytest.raises(AudienceError) as raised:
        parse_audience(data)
    assert raised.value.issues == issues
    assert isinstance(raised.value, ValueError)
    assert issues[0][0] in str(raised.value)


def test_every_issue_is_reported_with_its_path() -> None:
    data = {"and": ["a", {"not": None}, {"x": 1}, {"or": [True]}, [], {"not": {"segment": ""}}]}
    with pytest.raises(AudienceError) as raised:
        parse_audience(data)
    paths = [path for path, _ in raised.value.issues]
    assert paths == [
        "expression.and[1].not",
        "expression.and[2]",
        "expression.and[3].or[0]",
        "expression.and[4]",
        "expression.and[5].not.segment",
    ]
    messages = dict(raised.value.issues)
    assert messages["expression.and[1].not"].endswith("got null")
    assert messages["expression.and[3].or[0]"].endswith("got a boolean")
    assert messages["expression.and[4]"].endswith("got an array")


def test_depth_limit() -> None:
    assert isinstance(parse_audience(nested_not(MAX_AUDIENCE_DEPTH)), NotExpression)
    with pytest.raises(AudienceError) as raised:
        parse_audience(nested_not(MAX_AUDIENCE_DEPTH + 1))
    [(path, message)] = raised.value.issues
    assert path == "expression" + ".not" * (MAX_AUDIENCE_DEPTH + 1)
    assert message == "nested more than 16 operators deep"
    with pytest.raises(ValidationError, match="16 operators deep"):
        EXPRESSION.validate_python(nested_not(MAX_AUDIENCE_DEPTH + 1))
    with pytest.raises(AudienceError):
        parse_audience(nested_not(10_000))


def test_segment_reference_limit() -> None:
    many = [f"s{i}" for i in range(MAX_AUDIENCE_SEGMENTS)]
    assert len(segment_ids(parse_audience({"or": many}))) == MAX_AUDIENCE_SEGMENTS
    with pytest.raises(AudienceError) as raised:
        parse_audience({"or": [*many, "one-more"]})
    assert raised.value.issues == [("expression.or", "has 101 operands; at most 100 are allowed")]

    spread = {"and": [{"or": many[:60]}, {"not": {"or": many[:60]}}]}
    with pytest.raises(AudienceError) as raised:
        parse_audience(spread)
    assert raised.value.issues == [
        ("expression", "references 120 segments; at most 100 are allowed")
    ]
    with pytest.raises(ValidationError, match="references 120 segments"):
        EXPRESSION.validate_python(spread)


def single_key(key: str, value: object) -> dict[str, object]:
    return {key: value}


json_like = st.recursive(
    st.one_of(st.sampled_from(["a", "b", ""]), st.none(), st.booleans(), st.integers(0, 2)),
    lambda children: st.one_of(
        st.builds(single_key, st.sampled_from(["and", "or"]), st.lists(children, max_size=3)),
        st.builds(single_key, st.sampled_from(["not", "segment"]), children),
        st.lists(children, max_size=2),
        st.dictionaries(
            st.sampled_from(["and", "or", "not", "segment", "x"]), children, max_size=2
        ),
    ),
    max_leaves=12,
)


@given(st.one_of(json_like, expressions))
def test_parser_and_pydantic_model_agree(data: Any) -> None:
    try:
        parsed: AudienceExpression | None = parse_audience(data)
    except AudienceError:
        parsed = None
    if parsed is None:
        with pytest.raises(ValidationError):
            EXPRESSION.validate_python(data)
    else:
        assert EXPRESSION.validate_python(data) == parsed


def test_segment_ids_lists_each_reference_once() -> None:
    expr = parse_audience({"or": ["a", {"and": ["b", {"not": "a"}]}, {"segment": "c"}]})
    assert segment_ids(expr) == {"a", "b", "c"}


# -- evaluation ----------------------------------------------------------------------------


def reference_result(data: Any, segments: dict[str, set[int]], universe: set[int]) -> set[int]:
    if isinstance(data, str):
        return segments[data]
    if "segment" in data:
        return segments[data["segment"]]
    if "not" in data:
        return universe - reference_result(data["not"], segments, universe)
    operator = "and" if "and" in data else "or"
    results = [reference_result(item, segments, universe) for item in data[operator]]
    return set.intersection(*results) if operator == "and" else set.union(*results)


@st.composite
def populations(draw: st.DrawFn) -> tuple[set[int], dict[str, set[int]]]:
    size = draw(st.integers(0, 80))
    universe = set(range(size))
    segments = {s: draw(st.sets(st.integers(0, max(size - 1, 0)))) & universe for s in SEGMENTS}
    return universe, segments


def build(universe: set[int], segments: dict[str, set[int]]) -> SegmentMembership:
    membership = SegmentMembership()
    membership.add_users(np.array(sorted(universe), dtype=np.int64))
    for segment_id, members in segments.items():
        membership.replace(segment_id, np.array(sorted(members), dtype=np.int64))
    return membership


@given(expressions, populations())
def test_matches_set_algebra(data: Any, population: tuple[set[int], dict[str, set[int]]]) -> None:
    universe, segments = population
    membership = build(universe, segments)
    expr = parse_audience(data)
    expected = reference_result(data, segments, universe)
    assert set(evaluate(expr, membership)) == expected
    assert count(expr, membership) == len(expected)


@pytest.mark.parametrize(
    "data",
    [
        {"and": ["a", "b"]},
        {"and": ["a", "b", "c", "d", "e"]},
        {"or": ["a", "b"]},
        {"or": ["a", "b", "c", "d", "e"]},
        {"and": ["a", "b", {"not": "c"}, {"not": "d"}]},
        {"and": [{"not": "a"}, {"not": "b"}]},
        {"and": [{"not": "a"}]},
        {"or": ["a", {"not": "b"}, {"not": "c"}]},
        {"or": [{"not": "a"}, {"not": "b"}]},
        {"not": {"not": "a"}},
        {"and": [{"or": ["a", "b"]}, {"not": {"and": ["c", "d"]}}]},
    ],
)
def test_common_shapes_on_a_larger_population(data: Any) -> None:
    rng = np.random.default_rng(11)
    universe = set(range(20_000))
    segments = {
        s: set(np.flatnonzero(rng.random(20_000) < density).tolist())
        for s, density in zip(SEGMENTS, [0.1, 0.3, 0.5, 0.6, 0.05], strict=True)
    }
    membership = build(universe, segments)
    expected = reference_result(data, segments, universe)
    expr = parse_audience(data)
    assert count(expr, membership) == len(expected)
    assert set(evaluate(expr, membership)) == expected


def test_not_counts_users_in_no_segment() -> None:
    membership = build({0, 1, 2, 3}, {"a": {1}, "b": {1, 2}})
    assert count(parse_audience({"not": {"or": ["a", "b"]}}), membership) == 2
    assert set(evaluate(parse_audience({"not": "a"}), membership)) == {0, 2, 3}


def test_evaluate_returns_a_bitmap_the_caller_owns() -> None:
    membership = build({0, 1, 2}, {"a": {1, 2}})
    for data in ["a", {"and": ["a"]}, {"or": [{"and": ["a"]}]}]:
        result = evaluate(parse_audience(data), membership)
        result.add(0)
        result.discard(1)
        assert list(membership.members("a")) == [1, 2]


def test_names_are_resolved_to_segment_ids() -> None:
    membership = build({0, 1, 2}, {"seg-1": {0, 1}, "seg-2": {1, 2}})
    names = {"Big spenders": "seg-1", "Recent": "seg-2"}
    expr = parse_audience({"and": ["Big spenders", {"not": "Recent"}]})

    def resolve(key: str) -> str:
        return names.get(key, key)

    assert set(evaluate(expr, membership, resolve)) == {0}
    assert count(expr, membership, resolve) == 1
    assert count(parse_audience("seg-2"), membership, resolve) == 2


def test_unknown_segments_raise() -> None:
    membership = build({0}, {"a": {0}})
    with pytest.raises(UnknownSegment):
        count(parse_audience({"or": ["a", "missing"]}), membership)
    with pytest.raises(UnknownSegment):
        evaluate(parse_audience({"not": "missing"}), membership)
