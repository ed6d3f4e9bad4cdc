"""The catalog on PostgreSQL: the same schema, types and guarantees as on SQLite."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, exc, inspect
from sqlalchemy.orm import Session

from audience_manager.catalog import (
    CatalogError,
    CatalogService,
    Conflict,
    InvalidInput,
    SegmentCreate,
    create_catalog_engine,
)
from audience_manager.catalog.models import Base, SegmentRecord

SEED: dict[str, Any] = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
T = TypeVar("T")


def together(calls: list[Callable[[], T]]) -> list[T | CatalogError]:
    """Run ``calls`` on their own threads, released at once; errors are returned."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | CatalogError:
        barrier.wait()
        try:
            return call()
        except CatalogError as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


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
    reader = CatalogService(engine)
    seen: set[str] = set()
    revision = 0
    done = threading.Event()

    def follow() -> None:
        nonlocal revision
        finished = False
        while not finished:
            finished = done.wait(0.002)
            changes = reader.changes_since(revision)
            seen.update(s.id for s in changes.segments)
            revision = changes.revision

    follower = threading.Thread(target=follow)
    follower.start()

    def write(worker: int) -> list[str]:
        service = CatalogService(engine)
        return [
            service.create_segment(SegmentCreate(name=f"w{worker}-{i}", rules=SEED)).id
            for i in range(15)
        ]

    results = together([partial(write, w) for w in range(4)])
    done.set()
    follower.join()
    created = {id_ for result in results if isinstance(result, list) for id_ in result}
    assert len(created) == 60
    assert seen == created
    assert reader.current_revision() == revision == 60


def test_concurrent_replaces_cannot_close_a_cycle(engine: Engine) -> None:
    catalog = CatalogService(engine)
    for name in ("A", "B"):
        catalog.create_segment(SegmentCreate(name=name, rules=SEED))

    def point(source: str, target: str) -> Callable[[], object]:
        rules = {"conditions": [{"segment": target}]}
        return lambda: CatalogService(engine).replace_segment(
            source, SegmentCreate(name=source, rules=rules)
        )

    for _ in range(5):
        outcomes = together([point("A", "B"), point("B", "A")])
        failures = [o for o in outcomes if isinstance(o, CatalogError)]
        assert len(failures) == 1, outcomes
        assert "cycle" in str(failures[0])
        for name in ("A", "B"):
            catalog.replace_segment(name, SegmentCreate(name=name, rules=SEED))


def test_progress_updates_stay_out_of_the_feed(catalog: CatalogService) -> None:
    segment = catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    mark = catalog.current_revision()
    catalog.set_status(segment.id, "BUILDING", progress=0.5, size=3)
    assert catalog.changes_since(mark).segments == []
    catalog.set_status(segment.id, "ACTIVE", version=1)
    assert [s.status for s in catalog.changes_since(mark).segments] == ["ACTIVE"]
