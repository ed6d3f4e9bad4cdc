"""Cursor pagination of segments and attributes."""

import base64
from typing import Any

import pytest

from audience_manager.catalog import (
    MAX_PAGE_SIZE,
    AttributeCreate,
    CatalogService,
    InvalidInput,
    SegmentCreate,
    SegmentRead,
)

SEED: dict[str, Any] = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}


def all_pages(catalog: CatalogService, limit: int) -> list[list[SegmentRead]]:
    pages = []
    cursor = None
    while True:
        page = catalog.list_segments(limit=limit, cursor=cursor)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_every_segment_is_listed_exactly_once(catalog: CatalogService) -> None:
    created = [
        catalog.create_segment(SegmentCreate(name=f"segment {i:03}", rules=SEED)).id
        for i in range(250)
    ]
    pages = all_pages(catalog, limit=100)
    assert [len(page) for page in pages] == [100, 100, 50]
    listed = [segment.id for page in pages for segment in page]
    assert sorted(listed) == sorted(created)
    ordered = [(s.created_at, s.id) for page in pages for s in page]
    assert ordered == sorted(ordered)
    # Same order again, and pages of another size line up with it.
    assert [s.id for page in all_pages(catalog, limit=7) for s in page] == listed
    assert [s.id for page in all_pages(catalog, limit=250) for s in page] == listed


def test_changes_between_pages_do_not_repeat_or_skip(catalog: CatalogService) -> None:
    ids = [catalog.create_segment(SegmentCreate(name=f"s{i}", rules=SEED)).id for i in range(10)]
    first = catalog.list_segments(limit=4)
    catalog.delete_segment(ids[2])  # already listed
    catalog.delete_segment(ids[5])  # not yet listed
    catalog.replace_segment(ids[6], SegmentCreate(name="s6 renamed", rules=SEED))
    late = catalog.create_segment(SegmentCreate(name="late", rules=SEED)).id
    rest = catalog.list_segments(limit=100, cursor=first.next_cursor)
    assert rest.next_cursor is None
    assert [s.id for s in first.items] == ids[:4]
    assert [s.id for s in rest.items] == [*ids[4:5], *ids[6:], late]


def test_an_exact_last_page_has_no_cursor(catalog: CatalogService) -> None:
    for i in range(3):
        catalog.create_segment(SegmentCreate(name=f"s{i}", rules=SEED))
    assert catalog.list_segments(limit=3).next_cursor is None
    page = catalog.list_segments(limit=2)
    assert (len(page.items), page.next_cursor is None) == (2, False)
    last = catalog.list_segments(limit=2, cursor=page.next_cursor)
    assert (len(last.items), last.next_cursor) == (1, None)


def test_bad_cursors_and_limits_are_invalid_input(catalog: CatalogService) -> None:
    naive = base64.urlsafe_b64encode(b'["2024-01-01T00:00:00","seg_1"]').decode()
    for cursor in ("garbage!", "", "bm90IGpzb24", "WzEsMiwzXQ", naive):
        with pytest.raises(InvalidInput) as error:
            catalog.list_segments(cursor=cursor)
        assert [issue.path for issue in error.value.issues] == ["cursor"]
    for limit in (0, -1, MAX_PAGE_SIZE + 1):
        with pytest.raises(InvalidInput) as error:
            catalog.list_segments(limit=limit)
        assert [issue.path for issue in error.value.issues] == ["limit"]
    assert catalog.list_segments(limit=MAX_PAGE_SIZE).items == []


def test_attributes_paginate_too(catalog: CatalogService) -> None:
    names = [f"count{i}" for i in range(5)]
    for name in names:
        catalog.create_attribute(AttributeCreate(name=name, event_type="order", aggregate="count"))
    first = catalog.list_attributes(limit=2)
    second = catalog.list_attributes(limit=2, cursor=first.next_cursor)
    third = catalog.list_attributes(limit=2, cursor=second.next_cursor)
    assert [a.name for a in (*first.items, *second.items, *third.items)] == names
    assert third.next_cursor is None
