"""The catalog on PostgreSQL: the same schema, types and guarantees as on SQLite."""

from datetime import UTC, datetime

import catalog_races
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, exc, inspect
from sqlalchemy.orm import Session

from audience_manager.catalog import (
    CatalogService,
    Conflict,
    InvalidInput,
    SegmentCreate,
    create_catalog_engine,
)
from audience_manager.catalog.models import Base, SegmentRecord

SEED = catalog_races.SEED


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("segments")}
    live_name = indexes["uq_segments_live_name"]
    assert live_name["unique"]
    assert "deleted_at IS NULL" in str(live_name["dialect_options"]["postgresql_where"])


def test_the_database_keeps_live_names_unique(engine: Engine) -> None:
    now = datetime.now(UTC)

    def record(id_: str, deleted: bool) -> SegmentRecord:
        return SegmentRecord(
            id=id_,
            name="Same",
            description="",
            type="STATIC",
            status="ACTIVE",
            status_progress=1.0,
            version=1,
            size=0,
            created_at=now,
            updated_at=now,
            deleted_at=now if deleted else None,
            revision=1,
        )

    with Session(engine) as session, session.begin():
        session.add_all([record("seg_a", True), record("seg_b", True), record("seg_c", False)])
    with pytest.raises(exc.IntegrityError), Session(engine) as session, session.begin():
        session.add(record("seg_d", False))


def test_timestamps_are_utc_whatever_the_session_zone(catalog_url: str) -> None:
    tokyo = create_catalog_engine(catalog_url, connect_args={"options": "-c timezone=Asia/Tokyo"})
    try:
        created = CatalogService(tokyo).create_segment(SegmentCreate(name="A", rules=SEED))
        read = CatalogService(tokyo).get_segment(created.id)
    finally:
        tokyo.dispose()
    assert read.created_at == created.created_at
    assert read.created_at.utcoffset() is not None
    assert read.created_at.utcoffset() == UTC.utcoffset(None)
    assert read.model_dump(mode="json")["createdAt"].endswith("Z")


def test_segments_round_trip(catalog: CatalogService) -> None:
    base = catalog.create_segment(SegmentCreate(name="Base", rules=SEED))
    rules = {"conditions": [{"segment": "Base"}, {"not": {"segment": base.id}}]}
    user = catalog.create_segment(SegmentCreate(name="User", rules=rules))
    assert catalog.get_segment("User") == user
    assert user.rules == rules
    with pytest.raises(Conflict):
        catalog.delete_segment(base.id)
    with pytest.raises(InvalidInput) as error:
        catalog.replace_segment(
            base.id, SegmentCreate(name="Base", rules={"conditions": [{"segment": "User"}]})
        )
    assert [issue.path for issue in error.value.issues] == ["rules.conditions[0].segment"]
    catalog.delete_segment(user.id)
    catalog.delete_segment(base.id)
    again = catalog.create_segment(SegmentCreate(name="Base", type="STATIC"))
    assert [s.id for s in catalog.list_segments().items] == [again.id]
    changes = catalog.changes_since(0)
    assert [(s.name, s.deleted) for s in changes.segments] == [
        ("User", True),
        ("Base", True),
        ("Base", False),
    ]


def test_pagination_lists_each_segment_once(catalog: CatalogService) -> None:
    created = {
        catalog.create_segment(SegmentCreate(name=f"s{i:03}", rules=SEED)).id for i in range(250)
    }
    listed: list[str] = []
    cursor = None
    while True:
        page = catalog.list_segments(limit=100, cursor=cursor)
        listed.extend(s.id for s in page.items)
        if (cursor := page.next_cursor) is None:
            break
    assert len(listed) == len(created) == len(set(listed))
    assert set(listed) == created


def test_concurrent_writes_take_distinct_revisions_and_none_is_missed(engine: Engine) -> None:
    catalog_races.revisions_are_distinct_and_none_is_missed(engine)


def test_concurrent_replaces_cannot_close_a_cycle(engine: Engine) -> None:
    catalog_races.replaces_cannot_close_a_cycle(engine)


def test_progress_updates_stay_out_of_the_feed(catalog: CatalogService) -> None:
    segment = catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    mark = catalog.current_revision()
    catalog.set_status(segment.id, "BUILDING", progress=0.5, size=3)
    assert catalog.changes_since(mark).segments == []
    catalog.set_status(segment.id, "ACTIVE", version=1)
    assert [s.status for s in catalog.changes_since(mark).segments] == ["ACTIVE"]
