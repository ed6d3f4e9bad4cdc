"""The change feed: what changed after a revision, and nothing else."""

from typing import Any

import pytest

from audience_manager.catalog import (
    AttributeCreate,
    CatalogChanges,
    CatalogService,
    Conflict,
    InvalidInput,
    SegmentCreate,
)

SEED: dict[str, Any] = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}


def summary(changes: CatalogChanges) -> list[tuple[str, int, bool]]:
    return [(s.name, s.version, s.deleted) for s in changes.segments] + [
        (a.name, a.version, a.deleted) for a in changes.attributes
    ]


def test_a_new_catalog_is_at_revision_zero(catalog: CatalogService) -> None:
    assert catalog.current_revision() == 0
    assert catalog.changes_since(0) == CatalogChanges(revision=0, segments=[], attributes=[])


def test_each_write_takes_the_next_revision(catalog: CatalogService) -> None:
    a = catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    assert catalog.current_revision() == 1
    catalog.create_attribute(AttributeCreate(name="orders", event_type="order", aggregate="count"))
    assert catalog.current_revision() == 2
    catalog.replace_segment(a.id, SegmentCreate(name="A", rules=SEED))
    assert catalog.current_revision() == 3
    with pytest.raises(Conflict):
        catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    with pytest.raises(InvalidInput):
        catalog.create_segment(SegmentCreate(name="B"))
    assert catalog.current_revision() == 3  # failed writes take no revision


def test_changes_since_returns_exactly_what_changed_after(catalog: CatalogService) -> None:
    a = catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    b = catalog.create_segment(SegmentCreate(name="B", rules=SEED))
    catalog.create_attribute(AttributeCreate(name="orders", event_type="order", aggregate="count"))
    mark = catalog.current_revision()
    c = catalog.create_segment(SegmentCreate(name="C", type="STATIC"))
    catalog.replace_segment(a.id, SegmentCreate(name="A", description="changed", rules=SEED))
    catalog.delete_segment(c.id)
    catalog.create_attribute(AttributeCreate(name="views", event_type="view", aggregate="count"))

    changes = catalog.changes_since(mark)
    assert changes.revision == catalog.current_revision() == mark + 4
    assert summary(changes) == [("A", 2, False), ("C", 1, True), ("views", 1, False)]
    deleted = changes.segments[1]
    assert (deleted.id, deleted.deleted) == (c.id, True)

    everything = catalog.changes_since(0)
    assert {s.id for s in everything.segments} == {a.id, b.id, c.id}
    assert [s.name for s in everything.segments] == ["B", "A", "C"]  # by last change
    assert catalog.changes_since(changes.revision) == CatalogChanges(
        revision=changes.revision, segments=[], attributes=[]
    )


def test_progress_and_size_updates_stay_out_of_the_feed(catalog: CatalogService) -> None:
    segment = catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    mark = catalog.current_revision()
    for step in range(1, 10):
        catalog.set_status(segment.id, "BUILDING", progress=step / 10, size=step)
    assert catalog.current_revision() == mark
    assert catalog.changes_since(mark).segments == []
    assert catalog.get_segment(segment.id).size == 9

    catalog.set_status(segment.id, "ACTIVE", size=10)
    changes = catalog.changes_since(mark)
    assert [(s.status, s.size, s.version) for s in changes.segments] == [("ACTIVE", 10, 1)]
    mark = changes.revision
    catalog.set_status(segment.id, "ACTIVE", size=11)
    assert catalog.changes_since(mark).segments == []
    catalog.set_status(segment.id, "FAILED", reason="store down")
    catalog.set_status(segment.id, "FAILED", reason="store still down")
    changes = catalog.changes_since(mark)
    assert changes.revision == mark + 2
    assert [(s.status, s.status_reason) for s in changes.segments] == [
        ("FAILED", "store still down")
    ]


def test_changes_since_checks_its_argument(catalog: CatalogService) -> None:
    with pytest.raises(InvalidInput):
        catalog.changes_since(-1)
