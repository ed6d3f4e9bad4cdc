"""Segment CRUD, validation and references through the catalog service."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audience_manager.catalog import (
    CatalogService,
    Conflict,
    InvalidInput,
    NotFound,
    SegmentCreate,
    SegmentRead,
)

SEED: dict[str, Any] = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def dynamic(name: str, rules: dict[str, Any] | None = None, **fields: Any) -> SegmentCreate:
    return SegmentCreate(name=name, rules=SEED if rules is None else rules, **fields)


def referencing(*targets: str, operator: str = "in") -> dict[str, Any]:
    return {
        "conditions": [
            {"field": "plan", "operator": "eq", "value": "pro"},
            *({"segment": target, "operator": operator} for target in targets),
        ]
    }


def issues(error: pytest.ExceptionInfo[InvalidInput]) -> list[tuple[str, str]]:
    return [(issue.path, issue.message) for issue in error.value.issues]


def test_create_returns_the_documented_shape(catalog: CatalogService) -> None:
    before = datetime.now(UTC)
    created = catalog.create_segment(
        SegmentCreate.model_validate({"name": "High value", "rules": SEED})
    )
    body = created.model_dump(mode="json")
    assert re.fullmatch(r"seg_[0-9a-f]{16}", body["id"])
    assert ISO_Z.fullmatch(body["createdAt"])
    assert body["createdAt"] == body["updatedAt"]
    assert before - timedelta(seconds=1) <= created.created_at <= datetime.now(UTC)
    assert body == {
        "id": created.id,
        "name": "High value",
        "description": "",
        "type": "DYNAMIC",
        "rules": SEED,
        "status": "BUILDING",
        "statusProgress": 0.0,
        "statusReason": None,
        "version": 1,
        "size": 0,
        "createdAt": body["createdAt"],
        "updatedAt": body["updatedAt"],
        "deleted": False,
    }


def test_get_by_id_or_name_round_trips(catalog: CatalogService) -> None:
    created = catalog.create_segment(dynamic("Big spenders", description="over 1000"))
    assert catalog.get_segment(created.id) == created
    assert catalog.get_segment("Big spenders") == created
    assert catalog.get_segment(created.id).created_at.tzinfo is not None
    with pytest.raises(NotFound):
        catalog.get_segment("seg_0000000000000000")
    with pytest.raises(NotFound):
        catalog.get_segment("big spenders")


def test_static_segments_have_no_rules_and_start_active(catalog: CatalogService) -> None:
    created = catalog.create_segment(SegmentCreate(name="Uploaded", type="STATIC"))
    assert (created.type, created.rules, created.status) == ("STATIC", None, "ACTIVE")
    assert (created.size, created.status_progress) == (0, 1.0)
    with pytest.raises(InvalidInput) as error:
        catalog.create_segment(SegmentCreate(name="Other", type="STATIC", rules=SEED))
    assert [path for path, _ in issues(error)] == ["rules"]
    with pytest.raises(InvalidInput) as error:
        catalog.create_segment(SegmentCreate(name="No rules"))
    assert issues(error) == [("rules", "a DYNAMIC segment needs rules")]


def test_invalid_rules_name_each_offending_path(catalog: CatalogService) -> None:
    rules = {
        "conditions": [
            {"field": "plan", "operator": "eq", "value": "pro"},
            {"field": "age", "operator": "bigger", "value": 3},
        ]
    }
    with pytest.raises(InvalidInput) as error:
        catalog.create_segment(dynamic("Broken", rules))
    assert [path for path, _ in issues(error)] == ["rules.conditions[1].operator"]
    assert error.value.details[0]["path"] == "rules.conditions[1].operator"
    with pytest.raises(InvalidInput) as error:
        catalog.create_segment(
            dynamic("Time", {"conditions": [{"field": "firstSeen", "operator": "eq", "value": 1}]})
        )
    assert [path for path, _ in issues(error)] == ["rules.conditions[0].operator"]
    with pytest.raises(InvalidInput) as error:
        catalog.create_segment(dynamic("Not a group", {"field": "x"}))
    assert [path for path, _ in issues(error)] == ["rules"]
    assert catalog.list_segments().items == []
    assert catalog.current_revision() == 0


def test_names_are_unique_among_live_segments(catalog: CatalogService) -> None:
    first = catalog.create_segment(dynamic("VIP"))
    with pytest.raises(Conflict, match="'VIP' already exists"):
        catalog.create_segment(dynamic("VIP"))
    other = catalog.create_segment(dynamic("Other"))
    with pytest.raises(Conflict, match="'VIP' already exists"):
        catalog.replace_segment(other.id, dynamic("VIP"))
    catalog.delete_segment(first.id)
    again = catalog.create_segment(dynamic("VIP"))
    assert again.id != first.id
    assert catalog.get_segment("VIP") == again


def test_names_are_checked(catalog: CatalogService) -> None:
    with pytest.raises(InvalidInput) as error:
        catalog.create_segment(dynamic("seg_0123456789abcdef"))
    assert [path for path, _ in issues(error)] == ["name"]
    with pytest.raises(ValueError, match="at most 200"):
        SegmentCreate(name="x" * 201, rules=SEED)
    with pytest.raises(ValueError, match="blank"):
        SegmentCreate(name="  ", rules=SEED)
    assert catalog.create_segment(dynamic("x" * 200)).name == "x" * 200


def test_replace_bumps_the_version_and_rebuilds(catalog: CatalogService) -> None:
    created = catalog.create_segment(dynamic("Spenders"))
    catalog.set_status(created.id, "ACTIVE", size=12)
    rules = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 50}]}
    replaced = catalog.replace_segment(created.id, dynamic("Small spenders", rules))
    assert (replaced.id, replaced.name, replaced.rules) == (created.id, "Small spenders", rules)
    assert (replaced.version, replaced.status, replaced.status_progress) == (2, "BUILDING", 0.0)
    assert replaced.size == 12
    assert replaced.created_at == created.created_at
    assert replaced.updated_at >= created.updated_at
    assert catalog.replace_segment("Small spenders", dynamic("Small spenders", rules)).version == 3
    assert catalog.get_segment(created.id).version == 3
    with pytest.raises(NotFound):
        catalog.replace_segment("Spenders", dynamic("Spenders"))


def test_replace_keeps_the_type(catalog: CatalogService) -> None:
    static = catalog.create_segment(SegmentCreate(name="Uploaded", type="STATIC"))
    with pytest.raises(InvalidInput) as error:
        catalog.replace_segment(static.id, dynamic("Uploaded"))
    assert [path for path, _ in issues(error)] == ["type"]
    replaced = catalog.replace_segment(
        static.id, SegmentCreate(name="Uploaded", type="STATIC", description="list")
    )
    assert (replaced.version, replaced.status, replaced.description) == (2, "ACTIVE", "list")


def test_deleted_segments_are_gone(catalog: CatalogService) -> None:
    kept = catalog.create_segment(dynamic("Kept"))
    gone = catalog.create_segment(dynamic("Gone"))
    catalog.delete_segment("Gone")
    for key in (gone.id, "Gone"):
        with pytest.raises(NotFound):
            catalog.get_segment(key)
        with pytest.raises(NotFound):
            catalog.delete_segment(key)
        with pytest.raises(NotFound):
            catalog.replace_segment(key, dynamic("Gone"))
    assert [s.id for s in catalog.list_segments().items] == [kept.id]


def test_references_resolve_by_id_or_name(catalog: CatalogService) -> None:
    base = catalog.create_segment(dynamic("Base"))
    by_id = catalog.create_segment(dynamic("By id", referencing(base.id)))
    by_name = catalog.create_segment(dynamic("By name", referencing("Base", operator="not_in")))
    assert by_id.rules == referencing(base.id)  # stored as written
    assert by_name.rules == referencing("Base", operator="not_in")


def test_unknown_reference_is_reported_at_its_path(catalog: CatalogService) -> None:
    catalog.create_segment(dynamic("Base"))
    rules = {
        "conditions": [
            {"segment": "Base"},
            {"segment": "Missing"},
            {"match": "any", "conditions": [{"not": {"segment": "seg_0123456789abcdef"}}]},
        ]
    }
    with pytest.raises(InvalidInput) as error:
        catalog.create_segment(dynamic("Refs", rules))
    assert issues(error) == [
        ("rules.conditions[1].segment", "unknown segment 'Missing'"),
        ("rules.conditions[2].conditions[0].not.segment", "unknown segment 'seg_0123456789abcdef'"),
    ]


def test_self_reference_is_rejected(catalog: CatalogService) -> None:
    created = catalog.create_segment(dynamic("Self"))
    for reference in (created.id, "Self"):
        with pytest.raises(InvalidInput) as error:
            catalog.replace_segment(created.id, dynamic("Self", referencing(reference)))
        assert issues(error) == [
            ("rules.conditions[1].segment", "a segment cannot reference itself")
        ]
    # A new segment's own name is not a segment yet.
    with pytest.raises(InvalidInput) as error:
        catalog.create_segment(dynamic("Fresh", referencing("Fresh")))
    assert issues(error) == [("rules.conditions[1].segment", "unknown segment 'Fresh'")]


def test_reference_cycles_are_rejected(catalog: CatalogService) -> None:
    a = catalog.create_segment(dynamic("A"))
    b = catalog.create_segment(dynamic("B", referencing("A")))
    c = catalog.create_segment(dynamic("C", referencing(b.id)))
    with pytest.raises(InvalidInput) as error:
        catalog.replace_segment(a.id, dynamic("A", referencing("Base", "C")))
    # Unknown references are reported before cycles are looked for.
    assert [path for path, _ in issues(error)] == ["rules.conditions[1].segment"]
    catalog.create_segment(dynamic("Base"))
    with pytest.raises(InvalidInput) as error:
        catalog.replace_segment(a.id, dynamic("A", referencing("Base", "C")))
    assert issues(error) == [
        ("rules.conditions[2].segment", "references form a cycle: 'A' -> 'C' -> 'B' -> 'A'")
    ]
    assert catalog.get_segment(a.id).version == 1
    # A diamond is not a cycle.
    assert catalog.replace_segment(a.id, dynamic("A", referencing("Base"))).version == 2
    assert catalog.replace_segment(c.id, dynamic("C", referencing("B", "A"))).version == 2


def test_referenced_segments_cannot_be_deleted(catalog: CatalogService) -> None:
    base = catalog.create_segment(dynamic("Base"))
    user = catalog.create_segment(dynamic("User", referencing(base.id)))
    catalog.create_segment(dynamic("Other user", {"conditions": [{"not": {"segment": "Base"}}]}))
    with pytest.raises(Conflict, match="'Base' is referenced by 'Other user', 'User'"):
        catalog.delete_segment(base.id)
    catalog.delete_segment(user.id)
    catalog.replace_segment("Other user", dynamic("Other user"))
    catalog.delete_segment(base.id)
    with pytest.raises(NotFound):
        catalog.get_segment(base.id)


def test_a_segment_named_by_others_keeps_its_name(catalog: CatalogService) -> None:
    base = catalog.create_segment(dynamic("Base"))
    catalog.create_segment(dynamic("By id", referencing(base.id)))
    assert catalog.replace_segment(base.id, dynamic("Renamed")).name == "Renamed"
    catalog.create_segment(dynamic("By name", referencing("Renamed")))
    with pytest.raises(Conflict, match="'By name' refer to it by name"):
        catalog.replace_segment(base.id, dynamic("Again"))
    assert catalog.replace_segment(base.id, dynamic("Renamed", description="d")).version == 3


def _status(segment: SegmentRead) -> tuple[str, float, str | None, int, int]:
    return (
        segment.status,
        segment.status_progress,
        segment.status_reason,
        segment.size,
        segment.version,
    )


def test_set_status_records_processing(catalog: CatalogService) -> None:
    created = catalog.create_segment(dynamic("Building"))
    progress = catalog.set_status(created.id, "BUILDING", progress=0.5, size=10)
    assert _status(progress) == ("BUILDING", 0.5, None, 10, 1)
    assert catalog.get_segment(created.id) == progress
    assert progress.updated_at == created.updated_at
    active = catalog.set_status(created.id, "ACTIVE", size=40)
    assert _status(active) == ("ACTIVE", 1.0, None, 40, 1)
    failed = catalog.set_status(created.id, "FAILED", reason="backfill crashed")
    assert _status(failed) == ("FAILED", 1.0, "backfill crashed", 40, 1)
    rebuilding = catalog.set_status(created.id, "BUILDING")
    assert _status(rebuilding) == ("BUILDING", 0.0, None, 40, 1)


def test_set_status_checks_its_arguments(catalog: CatalogService) -> None:
    created = catalog.create_segment(dynamic("Checked"))
    with pytest.raises(InvalidInput) as error:
        catalog.set_status(created.id, "DONE")  # type: ignore[arg-type]
    assert [path for path, _ in issues(error)] == ["status"]
    with pytest.raises(InvalidInput):
        catalog.set_status(created.id, "BUILDING", progress=1.5)
    with pytest.raises(InvalidInput):
        catalog.set_status(created.id, "ACTIVE", size=-1)
    with pytest.raises(NotFound):
        catalog.set_status("Checked", "ACTIVE")  # by id only
    catalog.replace_segment(created.id, dynamic("Checked"))
    with pytest.raises(Conflict, match="at version 2, not 1"):
        catalog.set_status(created.id, "ACTIVE", version=1)
    assert catalog.get_segment(created.id).status == "BUILDING"
    assert catalog.set_status(created.id, "ACTIVE", version=2).status == "ACTIVE"
