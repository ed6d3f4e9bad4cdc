"""Segments: create, read, list, replace, delete, and preview an unsaved rule."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from audience_manager.api.management.processor_client import ProcessorClient
from audience_manager.api.management.segments.schemas import (
    PreviewResponse,
    SegmentPage,
    SegmentResponse,
)
from audience_manager.catalog.schemas import SegmentCreate
from audience_manager.catalog.service import CatalogService
from audience_manager.catalog.validation import CheckedRules, check_segment
from audience_manager.rules.attributes import BUILTIN_ATTRIBUTES
from audience_manager.store import StateStore

__all__ = ["SegmentService"]

_CATALOG_PAGE = 1_000


class SegmentService:
    """Segment definitions live in the catalog; sizes and previews come from the state
    store and the processor."""

    def __init__(
        self, catalog: CatalogService, store: StateStore, processor: ProcessorClient
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._processor = processor

    def create(self, data: SegmentCreate) -> SegmentResponse:
        """A new segment: ``BUILDING`` until the processor has backfilled it."""
        return SegmentResponse.of(self._catalog.create_segment(data), {})

    def get(self, segment_id: str) -> SegmentResponse:
        """A segment by id (or name), with its live size."""
        return SegmentResponse.of(self._catalog.get_segment(segment_id), self._store.sizes())

    def list_segments(self, limit: int, cursor: str | None) -> SegmentPage:
        """Segments in creation order, a page at a time."""
        page = self._catalog.list_segments(limit, cursor)
        sizes = self._store.sizes() if page.items else {}
        items = [SegmentResponse.of(segment, sizes) for segment in page.items]
        return SegmentPage(items=items, next_cursor=page.next_cursor)

    def replace(self, segment_id: str, data: SegmentCreate) -> SegmentResponse:
        """Replace a whole segment; the version goes up and a DYNAMIC one rebuilds."""
        replaced = self._catalog.replace_segment(segment_id, data)
        return SegmentResponse.of(replaced, self._store.sizes())

    def delete(self, segment_id: str) -> None:
        """Delete a segment that no other segment references."""
        self._catalog.delete_segment(segment_id)

    async def preview(self, rules: dict[str, Any], sample: int) -> PreviewResponse:
        """Size and a sample of the users an unsaved rule matches now.

        The rule is checked first, like a segment's (paths under ``rules``, unknown
        segment references included), then evaluated by the processor.
        """
        checked = await run_in_threadpool(self._check, rules)
        body = {"rules": checked.rules, "sample": sample}
        answers = await self._processor.ask_all("preview", lambda _: body, retry_not_found=True)
        found = [user_id for answer in answers for user_id in answer["sample"]]
        return PreviewResponse(size=sum(int(a["size"]) for a in answers), sample=found[:sample])

    def _check(self, rules: dict[str, Any]) -> CheckedRules:
        return check_segment(
            SegmentCreate(name="preview", rules=rules),
            segment_id=None,
            live=self._live_segments(),
            graph={},
            attributes=self._attribute_names(),
        )

    def _live_segments(self) -> dict[str, str]:
        live: dict[str, str] = {}
        cursor: str | None = None
        while True:
            page = self._catalog.list_segments(_CATALOG_PAGE, cursor)
            live.update((segment.id, segment.name) for segment in page.items)
            if page.next_cursor is None:
                return live
            cursor = page.next_cursor

    def _attribute_names(self) -> set[str]:
        names = set(BUILTIN_ATTRIBUTES)
        cursor: str | None = None
        while True:
            page = self._catalog.list_attributes(_CATALOG_PAGE, cursor)
            names.update(attribute.name for attribute in page.items)
            if page.next_cursor is None:
                return names
            cursor = page.next_cursor
