"""Catalog changes on PostgreSQL: announced at commit, heard by the watcher and the processor."""

import time
from collections.abc import Iterator
from pathlib import Path

import catalog_races
import psycopg
import pytest
from processing import processor_thread, seconds_until
from sqlalchemy import make_url

from audience_manager.catalog import (
    AttributeCreate,
    CatalogService,
    CatalogWatcher,
    Conflict,
    SegmentCreate,
)
from audience_manager.catalog.watch import CHANNEL
from audience_manager.config import Settings

SEED = catalog_races.SEED


@pytest.fixture
def listener(catalog_url: str) -> Iterator[psycopg.Connection]:
    conninfo = make_url(catalog_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f"LISTEN {CHANNEL}")
        yield connection


@pytest.fixture
def watcher(catalog_url: str) -> Iterator[CatalogWatcher]:
    watcher = CatalogWatcher(catalog_url)
    assert watcher.changed()  # the first answer: nothing was read yet
    assert watcher.changed(timeout=5)  # listening now: read what came before
    yield watcher
    watcher.close()


def announced(listener: psycopg.Connection) -> list[str]:
    return [notify.payload for notify in listener.notifies(timeout=0.2)]


def test_each_committed_change_is_announced_with_its_revision(
    catalog: CatalogService, listener: psycopg.Connection
) -> None:
    a = catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    catalog.replace_segment(a.id, SegmentCreate(name="A", description="again", rules=SEED))
    catalog.set_status(a.id, "BUILDING", progress=0.5)  # progress only: no revision
    catalog.set_status(a.id, "ACTIVE")
    with pytest.raises(Conflict):  # rolled back: nothing to announce
        catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    catalog.create_attribute(AttributeCreate(name="orders", event_type="order", aggregate="count"))
    catalog.delete_segment(a.id)
    assert announced(listener) == ["1", "2", "3", "4", "5"]
    assert catalog.current_revision() == 5


def test_the_watcher_wakes_within_milliseconds_and_stays_quiet_otherwise(
    catalog: CatalogService, watcher: CatalogWatcher
) -> None:
    assert not watcher.changed(timeout=0.3)
    latencies = []
    for i in range(5):
        started = time.monotonic()
        catalog.create_segment(SegmentCreate(name=f"s{i}", rules=SEED))
        assert watcher.changed(timeout=2)
        latencies.append(time.monotonic() - started)
        assert not watcher.changed()
    print(f"segment write to watcher: {max(latencies) * 1000:.1f} ms at most")
    assert max(latencies) < 0.1


def test_the_processor_applies_a_new_segment_within_a_second(
    catalog: CatalogService, catalog_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, catalog_url=catalog_url)

    def active(segment_id: str) -> bool:
        return catalog.get_segment(segment_id).status == "ACTIVE"

    with processor_thread(settings):
        first = catalog.create_segment(SegmentCreate(name="first", rules=SEED))
        seconds_until(lambda: active(first.id))  # the processor is up
        time.sleep(0.3)
        second = catalog.create_segment(SegmentCreate(name="second", rules=SEED))
        latency = seconds_until(lambda: active(second.id), timeout=5)
    print(f"segment write to ACTIVE in the catalog: {latency * 1000:.0f} ms")
    assert latency < 1.0
