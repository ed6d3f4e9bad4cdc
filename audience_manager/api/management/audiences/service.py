"""Audiences: boolean expressions over segments, counted on in-memory bitmaps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from audience_manager.api.management.audiences.schemas import AudienceCount, Overlap
from audience_manager.api.management.membership_cache import MembershipCache
from audience_manager.catalog.errors import InvalidInput, NotFound
from audience_manager.catalog.service import CatalogService
from audience_manager.membership import MAX_AUDIENCE_SEGMENTS, AudienceError, parse_audience
from audience_manager.rules.errors import RuleIssue

__all__ = ["AudienceService", "expression_of", "segment_leaves"]

_ROOT = "expression"


def expression_of(body: Any) -> Any:
    """The expression of a count request: ``{"expression": e}`` or ``e`` itself."""
    if isinstance(body, dict) and _ROOT in body:
        return body[_ROOT]
    return body


def segment_leaves(node: Any, path: str = _ROOT) -> Iterator[tuple[str, str]]:
    """``(path, segment key)`` of every segment in a valid expression, as written.

    Paths are those :func:`~audience_manager.membership.parse_audience` reports.
    """
    if isinstance(node, str):
        yield path, node
    elif "segment" in node:
        yield f"{path}.segment", node["segment"]
    elif "not" in node:
        yield from segment_leaves(node["not"], f"{path}.not")
    else:
        kind = "and" if "and" in node else "or"
        for index, operand in enumerate(node[kind]):
            yield from segment_leaves(operand, f"{path}.{kind}[{index}]")


class AudienceService:
    """Resolves segment names and ids through the catalog, counts on the cache.

    ``not`` means "users with a profile who are not in ...".
    """

    def __init__(self, catalog: CatalogService, cache: MembershipCache) -> None:
        self._catalog = catalog
        self._cache = cache

    def count(self, body: Any) -> AudienceCount:
        """The size of the audience; 422 naming the path of an unknown segment."""
        raw = expression_of(body)
        expression = parse_audience(raw)
        resolved: dict[str, str] = {}
        issues: list[tuple[str, str]] = []
        for path, key in segment_leaves(raw):
            if key not in resolved:
                segment_id = self._segment_id(key)
                if segment_id is None:
                    issues.append((path, f"unknown segment {key!r}"))
                    continue
                resolved[key] = segment_id
        if issues:
            raise AudienceError(issues)
        return AudienceCount(count=self._cache.count(expression, resolved))

    def overlap(self, ids: str) -> Overlap:
        """Pairwise overlaps of comma-separated segment ids (or names)."""
        keys = [key.strip() for key in ids.split(",") if key.strip()]
        if not keys:
            raise InvalidInput.at("ids", "name at least one segment")
        if len(keys) > MAX_AUDIENCE_SEGMENTS:
            raise InvalidInput.at("ids", f"at most {MAX_AUDIENCE_SEGMENTS} segments")
        segment_ids: list[str] = []
        issues: list[RuleIssue] = []
        for index, key in enumerate(keys):
            segment_id = self._segment_id(key)
            if segment_id is None:
                issues.append(RuleIssue(f"ids[{index}]", f"unknown segment {key!r}"))
            else:
                segment_ids.append(segment_id)
        if issues:
            raise InvalidInput(issues)
        return Overlap(segments=segment_ids, matrix=self._cache.overlap(segment_ids))

    def _segment_id(self, key: str) -> str | None:
        try:
            return self._catalog.get_segment(key).id
        except NotFound:
            return None
