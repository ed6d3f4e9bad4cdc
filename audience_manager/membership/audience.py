"""Audience expressions: boolean algebra over segments, counted on bitmaps.

An expression is a segment (a bare string, or ``{"segment": "<id or name>"}``), or
``{"and": [e, ...]}``, ``{"or": [e, ...]}``, ``{"not": e}``. ``not`` is relative to every
known user. Expressions nest at most :data:`MAX_AUDIENCE_DEPTH` operators deep and
reference at most :data:`MAX_AUDIENCE_SEGMENTS` segments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    model_validator,
)
from pyroaring import BitMap

from audience_manager.membership.bitmaps import SegmentMembership

__all__ = [
    "MAX_AUDIENCE_DEPTH",
    "MAX_AUDIENCE_SEGMENTS",
    "MAX_SEGMENT_KEY_LENGTH",
    "AndExpression",
    "AudienceError",
    "AudienceExpression",
    "NotExpression",
    "OrExpression",
    "SegmentReference",
    "count",
    "evaluate",
    "parse_audience",
    "segment_ids",
]

MAX_AUDIENCE_DEPTH = 16
"""Most operators (``and``, ``or``, ``not``) on any path from the root to a segment."""
MAX_AUDIENCE_SEGMENTS = 100
"""Most segment references in one expression (and operands of one ``and``/``or``)."""
MAX_SEGMENT_KEY_LENGTH = 256

_OPERATORS = ("and", "or", "not", "segment")
_SHAPE = "expected a segment id or an object with one key: 'and', 'or', 'not' or 'segment'"


class AudienceError(ValueError):
    """An invalid audience expression; ``issues`` lists ``(path, message)`` pairs."""

    def __init__(self, issues: list[tuple[str, str]]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{path}: {message}" for path, message in issues))


class _Node(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )


_SegmentKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_SEGMENT_KEY_LENGTH, strict=True)
]


class SegmentReference(_Node):
    """The members of one segment, named by id or name; a bare string validates too."""

    segment: _SegmentKey

    @model_validator(mode="before")
    @classmethod
    def _from_bare_string(cls, data: Any) -> Any:
        return {"segment": data} if isinstance(data, str) else data


class AndExpression(_Node):
    """Users in every operand."""

    operands: tuple[_Expression, ...] = Field(
        alias="and", min_length=1, max_length=MAX_AUDIENCE_SEGMENTS
    )


class OrExpression(_Node):
    """Users in at least one operand."""

    operands: tuple[_Expression, ...] = Field(
        alias="or", min_length=1, max_length=MAX_AUDIENCE_SEGMENTS
    )


class NotExpression(_Node):
    """Known users not in the operand."""

    operand: _Expression = Field(alias="not")


_NODE_KINDS: dict[type[BaseModel], str] = {
    SegmentReference: "segment",
    AndExpression: "and",
    OrExpression: "or",
    NotExpression: "not",
}


def _kind(data: Any) -> str | None:
    if isinstance(data, str):
        return "segment"
    if isinstance(data, dict):
        return next((key for key in _OPERATORS if key in data), None)
    return _NODE_KINDS.get(type(data))


_Expression = Annotated[
    Annotated[SegmentReference, Tag("segment")]
    | Annotated[AndExpression, Tag("and")]
    | Annotated[OrExpression, Tag("or")]
    | Annotated[NotExpression, Tag("not")],
    Discriminator(_kind, custom_error_type="audience_expression", custom_error_message=_SHAPE),
]


def _depth(expr: _Expression) -> int:
    if isinstance(expr, SegmentReference):
        return 0
    if isinstance(expr, NotExpression):
        return 1 + _depth(expr.operand)
    return 1 + max(_depth(operand) for operand in expr.operands)


def _references(expr: _Expression) -> int:
    if isinstance(expr, SegmentReference):
        return 1
    if isinstance(expr, NotExpression):
        return _references(expr.operand)
    return sum(_references(operand) for operand in expr.operands)


def _too_many_references(references: int) -> str:
    return f"references {references} segments; at most {MAX_AUDIENCE_SEGMENTS} are allowed"


def _check_limits(expr: _Expression) -> _Expression:
    if _depth(expr) > MAX_AUDIENCE_DEPTH:
        raise ValueError(f"nested more than {MAX_AUDIENCE_DEPTH} operators deep")
    if (references := _references(expr)) > MAX_AUDIENCE_SEGMENTS:
        raise ValueError(_too_many_references(references))
    return expr


AudienceExpression = Annotated[_Expression, AfterValidator(_check_limits)]
"""A validated audience expression; usable as a pydantic field type."""

for _model in _NODE_KINDS:
    _model.model_rebuild()


# -- parsing with paths ------------------------------------------------------------------


def parse_audience(data: object) -> AudienceExpression:
    """Validate JSON-like data into an expression; AudienceError lists every problem."""
    if isinstance(data, BaseModel):
        data = data.model_dump()
    parser = _Parser()
    expr = parser.parse(data, "expression", 0)
    if parser.references > MAX_AUDIENCE_SEGMENTS:
        parser.issues.append(("expression", _too_many_references(parser.references)))
    if parser.issues or expr is None:
        raise AudienceError(parser.issues)
    return expr


_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"),
    ((int, float), "a number"),
    (str, "a string"),
    ((list, tuple), "an array"),
    (dict, "an object"),
)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    names = (name for kind, name in _JSON_TYPES if isinstance(value, kind))
    return next(names, f"a {type(value).__name__}")


class _Parser:
    """Walks untrusted data once, collecting every issue instead of stopping at the first."""

    def __init__(self) -> None:
        self.issues: list[tuple[str, str]] = []
        self.references = 0

    def parse(self, data: object, path: str, depth: int) -> _Expression | None:
        if isinstance(data, str):
            return self._segment(data, path)
        if not isinstance(data, dict):
            self.issues.append((path, f"{_SHAPE}, got {_json_type(data)}"))
            return None
        kinds = [key for key in _OPERATORS if key in data]
        extra = [key for key in data if key not in _OPERATORS]
        if not kinds:
            found = ", ".join(repr(key) for key in extra) or "none"
            self.issues.append((path, f"{_SHAPE}, got keys {found}"))
            return None
        if len(kinds) > 1:
            both = " and ".join(repr(key) for key in kinds)
            self.issues.append((path, f"has {both}: use one object per operator"))
        self.issues.extend((f"{path}.{key}", "unexpected key") for key in extra)
        kind = kinds[0]
        inner_path = f"{path}.{kind}"
        if kind == "segment":
            return self._segment(data[kind], inner_path)
        if depth >= MAX_AUDIENCE_DEPTH:
            self.issues.append(
                (inner_path, f"nested more than {MAX_AUDIENCE_DEPTH} operators deep")
            )
            return None
        if kind == "not":
            operand = self.parse(data[kind], inner_path, depth + 1)
            return None if operand is None else NotExpression.model_construct(operand=operand)
        return self._group(kind, data[kind], inner_path, depth + 1)

    def _group(self, kind: str, items: object, path: str, depth: int) -> _Expression | None:
        if not isinstance(items, list | tuple):
            self.issues.append((path, f"expected an array of expressions, got {_json_type(items)}"))
            return None
        if not items:
            self.issues.append((path, "needs at least one operand"))
            return None
        if len(items) > MAX_AUDIENCE_SEGMENTS:
            message = f"has {len(items)} operands; at most {MAX_AUDIENCE_SEGMENTS} are allowed"
            self.issues.append((path, message))
            return None
        operands = [self.parse(item, f"{path}[{i}]", depth) for i, item in enumerate(items)]
        valid = tuple(operand for operand in operands if operand is not None)
        if len(valid) < len(operands):
            return None
        node = AndExpression if kind == "and" else OrExpression
        return node.model_construct(operands=valid)

    def _segment(self, key: object, path: str) -> SegmentReference | None:
        if not isinstance(key, str):
            self.issues.append((path, f"expected a segment id, got {_json_type(key)}"))
        elif not key:
            self.issues.append((path, "a segment id must not be empty"))
        elif len(key) > MAX_SEGMENT_KEY_LENGTH:
            message = f"a segment id is at most {MAX_SEGMENT_KEY_LENGTH} characters"
            self.issues.append((path, message))
        else:
            self.references += 1
            return SegmentReference.model_construct(segment=key)
        return None


# -- evaluation ----------------------------------------------------------------------------


def segment_ids(expr: AudienceExpression) -> set[str]:
    """Every segment id or name the expression references, as written."""
    found: set[str] = set()
    pending: list[_Expression] = [expr]
    while pending:
        node = pending.pop()
        if isinstance(node, SegmentReference):
            found.add(node.segment)
        elif isinstance(node, NotExpression):
            pending.append(node.operand)
        else:
            pending.extend(node.operands)
    return found


_Resolver = Callable[[str], str]


def evaluate(
    expr: AudienceExpression, membership: SegmentMembership, resolve: _Resolver | None = None
) -> BitMap:
    """The members of an audience, as a new bitmap the caller may change.

    ``resolve`` maps each segment name-or-id to a segment id (identity by default);
    unknown segments raise UnknownSegment.
    """
    result, shared = _Evaluator(membership, resolve).bitmap(expr)
    return result.copy() if shared else result


def count(
    expr: AudienceExpression, membership: SegmentMembership, resolve: _Resolver | None = None
) -> int:
    """The size of an audience, without materialising more than the shape needs."""
    return _Evaluator(membership, resolve).count(expr)


class _Evaluator:
    """Bitmap algebra over one membership.

    Intermediate results are ``(bitmap, shared)``: shared bitmaps are the membership's
    live ones and are never modified. Every bitmap involved is a subset of the universe,
    so a complement is a difference from it, and its size a subtraction.
    """

    def __init__(self, membership: SegmentMembership, resolve: _Resolver | None) -> None:
        self._membership = membership
        self._resolve = resolve
        self._universe = membership.universe

    def bitmap(self, expr: _Expression) -> tuple[BitMap, bool]:
        if isinstance(expr, SegmentReference):
            return self._leaf(expr), True
        if isinstance(expr, NotExpression):
            return self._universe - self.bitmap(expr.operand)[0], False
        kept, negated = self._split(expr.operands)
        if isinstance(expr, AndExpression):
            if not kept:
                return self._universe - _union(negated)[0], False
            base, shared = _intersection(kept)
            if not negated:
                return base, shared
            return base - _union(negated)[0], False
        # a | b | ~c | ~d  ==  universe - ((c & d) - (a | b))
        if not negated:
            return _union(kept)
        excluded = _intersection(negated)[0]
        if kept:
            excluded = excluded - _union(kept)[0]
        return self._universe - excluded, False

    def count(self, expr: _Expression) -> int:
        if isinstance(expr, SegmentReference):
            return len(self._leaf(expr))
        if isinstance(expr, NotExpression):
            return len(self._universe) - self.count(expr.operand)
        kept, negated = self._split(expr.operands)
        if isinstance(expr, AndExpression):
            if not negated:
                return _intersection_size(kept)
            if not kept:
                return len(self._universe) - _union_size(negated)
            return _difference_size(_intersection(kept)[0], negated)
        if not negated:
            return _union_size(kept)
        if not kept:
            return len(self._universe) - _intersection_size(negated)
        return len(self._universe) - _difference_size(_intersection(negated)[0], kept)

    def _leaf(self, expr: SegmentReference) -> BitMap:
        key = expr.segment if self._resolve is None else self._resolve(expr.segment)
        return self._membership.members(key)

    def _split(self, operands: Sequence[_Expression]) -> tuple[list[BitMap], list[BitMap]]:
        """Bitmaps of plain operands, and of the operands of negated ones."""
        kept: list[BitMap] = []
        negated: list[BitMap] = []
        for operand in operands:
            if isinstance(operand, NotExpression):
                negated.append(self.bitmap(operand.operand)[0])
            else:
                kept.append(self.bitmap(operand)[0])
        return kept, negated


def _intersection(bitmaps: list[BitMap]) -> tuple[BitMap, bool]:
    if len(bitmaps) == 1:
        return bitmaps[0], True
    # Smallest first keeps every intermediate result small.
    first, second, *rest = sorted(bitmaps, key=len)
    result = first & second
    if rest:
        result.intersection_update(*rest)
    return result, False


def _union(bitmaps: list[BitMap]) -> tuple[BitMap, bool]:
    if len(bitmaps) == 1:
        return bitmaps[0], True
    return BitMap.union(*bitmaps), False


def _intersection_size(bitmaps: list[BitMap]) -> int:
    if len(bitmaps) == 2:
        return bitmaps[0].intersection_cardinality(bitmaps[1])
    return len(_intersection(bitmaps)[0])


def _union_size(bitmaps: list[BitMap]) -> int:
    if len(bitmaps) == 2:
        return bitmaps[0].union_cardinality(bitmaps[1])
    return len(_union(bitmaps)[0])


def _difference_size(base: BitMap, removed: list[BitMap]) -> int:
    """``len(base - union(removed))`` without building the difference."""
    return len(base) - base.intersection_cardinality(_union(removed)[0])
