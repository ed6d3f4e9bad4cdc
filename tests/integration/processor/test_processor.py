"""The processor over the embedded log and catalog and each state store, in one process."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from processing import seconds_until
from services.valkey import ValkeyService
from sqlalchemy import Engine, event

from audience_manager.backends import open_relay_ports
from audience_manager.bus.embedded import EmbeddedEventBus
from audience_manager.catalog.database import create_catalog_engine, sqlite_url
from audience_manager.catalog.migrate import migrate
from audience_manager.catalog.schemas import SegmentCreate
from audience_manager.catalog.service import CatalogService
from audience_manager.catalog.watch import CatalogWatcher
from audience_manager.config import Settings
from audience_manager.engine import ManualClock
from audience_manager.engine.documents import decode_profile
from audience_manager.processor import definitions
from audience_manager.processor.codec import WireEvent, encode_erase, encode_event
from audience_manager.processor.relay import CHANGES, RELAYED, RelayProcess, run_relay
from audience_manager.processor.runtime import DEAD_LETTER, EVENTS, Processor, ProcessorConfig
from audience_manager.store import EmbeddedStateStore, StateStore
from audience_manager.store.redis import RedisStateStore

T0 = 1_767_225_600_000
HIGH_VALUE = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}


@dataclass
class Platform:
    directory: Path
    bus: EmbeddedEventBus
    store: StateStore
    catalog_engine: Engine
    catalog: CatalogService
    watcher: CatalogWatcher
    clock: ManualClock
    store_url: str | None = None

    def processor(self, *, relay_process: bool = False) -> Processor:
        config = ProcessorConfig(snapshots=self.directory / "snapshots")
        ports = functools.partial(open_relay_ports, self.settings()) if relay_process else None
        return Processor(
            self.bus, self.store, self.catalog, config, self.watcher, self.clock, ports
        )

    def settings(self) -> Settings:
        """Settings naming this platform's log and store (for a relay process to open)."""
        if self.store_url is None:
            return Settings(data_dir=self.directory, partitions=4)
        assert isinstance(self.store, RedisStateStore)
        return Settings(
            data_dir=self.directory,
            partitions=4,
            state_url=self.store_url,
            state_prefix=self.store.prefix,
        )

    def send(self, *events: WireEvent) -> None:
        self.bus.publish(EVENTS, [(e.user_id, encode_event(e)) for e in events])


@pytest.fixture(params=["embedded", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "embedded":
        embedded = EmbeddedStateStore(tmp_path / "state")
        yield embedded
        embedded.close()
        return
    server: ValkeyService = request.getfixturevalue("valkey_server")
    with server.prefix() as prefix:
        redis = RedisStateStore(server.url, prefix=prefix)
        yield redis
        redis.close()


@pytest.fixture
def platform(
    request: pytest.FixtureRequest, tmp_path: Path, store: StateStore
) -> Iterator[Platform]:
    url = sqlite_url(str(tmp_path / "catalog.db"))
    migrate(url)
    bus = EmbeddedEventBus(tmp_path / "log", partitions=4)
    engine = create_catalog_engine(url)
    watcher = CatalogWatcher(url, poll_every=0.0)  # every step reads the catalog
    store_url = None
    if isinstance(store, RedisStateStore):
        store_url = request.getfixturevalue("valkey_server").url
    catalog = CatalogService(engine)
    yield Platform(tmp_path, bus, store, engine, catalog, watcher, ManualClock(T0), store_url)
    watcher.close()
    engine.dispose()
    bus.close()


def purchase(user: str, amount: float, message_id: str | None = None) -> WireEvent:
    return WireEvent(
        user_id=user,
        event_type="purchase",
        timestamp=T0,
        properties={"amount": amount},
        message_id=message_id,
    )


def drain(processor: Processor) -> None:
    while processor.step():
        pass


def test_the_seed_walkthrough(platform: Platform) -> None:
    segment = platform.catalog.create_segment(
        SegmentCreate(name="High Value Users", rules=HIGH_VALUE)
    )
    processor = platform.processor()
    processor.recover()
    assert platform.catalog.get_segment(segment.id).status == "ACTIVE"

    platform.send(purchase("user123", 1500), purchase("user456", 20))
    drain(processor)

    assert platform.store.user_segments("user123") == [segment.id]
    assert platform.store.members(segment.id, None, 10) == (["user123"], None)
    stored = platform.store.profile("user123")
    assert stored is not None
    assert decode_profile("user123", stored)["attributes"]["totalSpent"] == 1500
    assert platform.store.applied() == 2


def test_a_new_segment_is_backfilled_and_sized(platform: Platform) -> None:
    processor = platform.processor()
    processor.recover()
    platform.send(*(purchase(f"u{i}", 600 * i) for i in range(5)))
    drain(processor)

    segment = platform.catalog.create_segment(SegmentCreate(name="High", rules=HIGH_VALUE))
    processor.step()

    read = platform.catalog.get_segment(segment.id)
    assert (read.status, read.size) == ("ACTIVE", 3)
    assert platform.store.sizes() == {segment.id: 3}


def test_replaying_history_for_a_new_segment_reports_progress(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = platform.processor()
    processor.config = ProcessorConfig(snapshots=platform.directory / "snapshots", max_batch=50)
    processor.recover()
    logins = [
        WireEvent(user_id=f"u{i % 40}", event_type="login", timestamp=T0 + i, properties={})
        for i in range(1_000)
    ]
    platform.send(*logins)
    drain(processor)

    monkeypatch.setattr(definitions, "PROGRESS_EVERY", 0.0)
    reported: list[tuple[str, float | None]] = []
    set_status = platform.catalog.set_status

    def recorded(segment_id: str, status: Any, **fields: Any) -> Any:
        reported.append((status, fields.get("progress")))
        return set_status(segment_id, status, **fields)

    monkeypatch.setattr(platform.catalog, "set_status", recorded)
    rules = {"conditions": [{"event": "login", "count": {"operator": "gte", "value": 25}}]}
    segment = platform.catalog.create_segment(SegmentCreate(name="Regulars", rules=rules))
    processor.step()

    progress = [p for status, p in reported if status == "BUILDING"]
    assert progress[0] == 0.0
    assert len(progress) > 10  # the replay of 1,000 events in batches of 50
    assert progress == sorted(progress)
    assert 0.0 < progress[-1] < 1.0
    read = platform.catalog.get_segment(segment.id)
    assert (read.status, read.size) == ("ACTIVE", 40)


def test_duplicates_are_applied_once_and_poison_goes_to_dead_letters(platform: Platform) -> None:
    processor = platform.processor()
    processor.recover()
    platform.send(purchase("u1", 10, "m-1"), purchase("u1", 10, "m-1"))
    platform.bus.publish(EVENTS, [("u1", b"{not json")])
    platform.send(purchase("u1", 5))
    drain(processor)

    stored = platform.store.profile("u1")
    assert stored is not None
    assert decode_profile("u1", stored)["attributes"]["totalSpent"] == 15
    letters = platform.bus.consumer(DEAD_LETTER, "test")
    letters.assign(None)
    assert len(letters.poll(100, 1.0)) == 1


def test_erasure_removes_the_user_everywhere(platform: Platform) -> None:
    segment = platform.catalog.create_segment(SegmentCreate(name="High", rules=HIGH_VALUE))
    processor = platform.processor()
    processor.recover()
    platform.send(purchase("u1", 5000))
    drain(processor)
    platform.bus.publish(EVENTS, [("u1", encode_erase("u1"))])
    drain(processor)

    assert platform.store.profile("u1") is None
    assert platform.store.sizes() == {segment.id: 0}


def test_a_restart_resumes_without_loss_or_double_counting(platform: Platform) -> None:
    processor = platform.processor()
    processor.recover()
    counter = itertools.count()
    for _ in range(3):
        platform.send(*(purchase(f"u{next(counter) % 7}", 100) for _ in range(50)))
        drain(processor)
        if _ == 0:
            processor.snapshot()
    # A new process: restore the snapshot, replay the journal, carry on.
    resumed = platform.processor()
    resumed.recover()
    platform.send(*(purchase(f"u{next(counter) % 7}", 100) for _ in range(50)))
    drain(resumed)

    stored = [platform.store.profile(f"u{i}") for i in range(7)]
    total = sum(decode_profile("u", s)["attributes"]["totalSpent"] for s in stored if s)
    assert total == 200 * 100
    assert platform.store.applied() == 200


def test_a_replay_assigns_the_same_user_ids_however_the_polls_fall(platform: Platform) -> None:
    processor = platform.processor()
    processor.recover()
    processor.snapshot()  # replays below start from here
    platform.send(*(purchase(f"user-{i}", 10) for i in range(300)))
    drain(processor)
    original = {f"user-{i}": processor.engine.ids.get(f"user-{i}") for i in range(300)}

    # Small polls interleave partitions differently from the one big poll of the first run.
    resumed = platform.processor()
    resumed.config = ProcessorConfig(snapshots=platform.directory / "snapshots", max_batch=7)
    resumed.recover()

    assert {u: resumed.engine.ids.get(u) for u in original} == original


def published_changes(platform: Platform) -> list[dict[str, object]]:
    """Every change line on the topic (messages carry a user's lines), by sequence."""
    reader = platform.bus.consumer(CHANGES, f"test-{uuid.uuid4().hex}")
    reader.assign(None)
    records = reader.poll(1_000, 0.5)
    reader.close()
    return sorted(
        (
            {"userId": message["userId"], **change}
            for message in (msgspec.json.decode(r.value) for r in records)
            for change in message["changes"]
        ),
        key=lambda m: m["sequence"],
    )


def test_membership_changes_reach_the_topic_at_least_once(platform: Platform) -> None:
    segment = platform.catalog.create_segment(SegmentCreate(name="High", rules=HIGH_VALUE))
    processor = platform.processor()
    processor.recover()
    platform.send(purchase("a", 1500), purchase("b", 20), purchase("c", 2000))
    drain(processor)
    processor.close()
    assert [(m["userId"], m["change"], m["sequence"]) for m in published_changes(platform)] == [
        ("a", "enter", 1),
        ("c", "enter", 2),
    ]
    assert published_changes(platform)[0]["segmentId"] == segment.id

    # A crash after publishing line 2 but before its marker was stored: it goes out again.
    platform.store.set_marker("relayed-changes", 1)
    resumed = platform.processor()
    resumed.recover()
    resumed.close()
    assert [m["sequence"] for m in published_changes(platform)] == [1, 2, 2]
    again = platform.processor()
    again.recover()  # nothing new: nothing published
    again.close()
    assert len(published_changes(platform)) == 3


def test_a_relay_process_publishes_every_change_and_stops_with_the_processor(
    platform: Platform,
) -> None:
    platform.catalog.create_segment(SegmentCreate(name="High", rules=HIGH_VALUE))
    processor = platform.processor(relay_process=True)
    assert isinstance(processor.relay, RelayProcess)
    processor.recover()
    for user in "abcdef":
        platform.send(purchase(user, 1500))
        drain(processor)
    seconds_until(lambda: platform.store.marker(RELAYED) == 6)
    child = processor.relay.process
    assert child is not None
    assert child.is_alive()
    processor.close()
    assert not child.is_alive()
    assert [(m["userId"], m["sequence"]) for m in published_changes(platform)] == [
        (user, n) for n, user in enumerate("abcdef", start=1)
    ]


def test_a_relay_process_that_dies_is_started_again_and_carries_on(platform: Platform) -> None:
    platform.catalog.create_segment(SegmentCreate(name="High", rules=HIGH_VALUE))
    processor = platform.processor(relay_process=True)
    assert isinstance(processor.relay, RelayProcess)
    processor.recover()
    platform.send(purchase("a", 1500), purchase("b", 1500))
    drain(processor)
    seconds_until(lambda: platform.store.marker(RELAYED) == 2)
    first = processor.relay.process
    assert first is not None
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    first.join(10)
    platform.send(purchase("c", 1500))
    drain(processor)

    def published_all() -> bool:
        processor.step()  # idle steps wake the relay: a new one starts from the marker
        return platform.store.marker(RELAYED) == 3

    seconds_until(published_all, timeout=20)
    assert processor.relay.process is not first
    processor.close()
    assert [m["sequence"] for m in published_changes(platform)] == [1, 2, 3]


def test_an_orphaned_relay_publishes_what_is_committed_and_exits(platform: Platform) -> None:
    platform.catalog.create_segment(SegmentCreate(name="High", rules=HIGH_VALUE))
    processor = platform.processor()
    processor.relay = None  # nothing published by the processor itself
    processor.recover()
    platform.send(purchase("a", 1500), purchase("b", 1500))
    drain(processor)
    processor.close()
    assert published_changes(platform) == []
    reader, writer = multiprocessing.Pipe(duplex=False)
    ports = functools.partial(open_relay_ports, platform.settings())
    run_relay(ports, CHANGES, reader, parent=-1)  # not its parent: returns after one round
    assert [m["sequence"] for m in published_changes(platform)] == [1, 2]
    reader.close()
    writer.close()


def test_the_change_log_keeps_its_newest_lines_once_they_are_published(
    platform: Platform,
) -> None:
    platform.catalog.create_segment(SegmentCreate(name="High", rules=HIGH_VALUE))
    processor = platform.processor()
    processor.config = ProcessorConfig(snapshots=platform.directory / "snapshots", changes_kept=3)
    processor.recover()
    for user in "abcdefgh":
        platform.send(purchase(user, 1500))
        drain(processor)
    assert platform.store.last_change() == 8
    platform.store.set_marker(RELAYED, 2)  # as if the relay were behind: unpublished lines stay
    processor.snapshot()
    assert [n for n, _ in platform.store.changes_since(0)] == list(range(3, 9))
    platform.store.set_marker(RELAYED, 8)
    processor.snapshot()
    assert [n for n, _ in platform.store.changes_since(0)] == [6, 7, 8]
    processor.close()
    assert [m["sequence"] for m in published_changes(platform)] == list(range(1, 9))


def test_the_catalog_is_read_when_the_watcher_says_not_every_step(platform: Platform) -> None:
    statements: list[str] = []
    event.listen(
        platform.catalog_engine, "before_cursor_execute", lambda *a: statements.append(a[2])
    )
    processor = platform.processor()
    processor.config = ProcessorConfig(
        snapshots=platform.directory / "snapshots", poll_timeout=0.01
    )
    processor.watcher = CatalogWatcher(str(platform.catalog_engine.url), poll_every=0.2)
    processor.recover()
    statements.clear()
    steps, started = 0, time.monotonic()
    while time.monotonic() - started < 0.5:
        processor.step()
        steps += 1
    processor.watcher.close()
    # A check at once, after 0.2 s and (unless steps ran late) after 0.4 s: a revision read.
    assert len(statements) in (2, 3)
    assert all("catalog_revision" in statement for statement in statements)
    assert steps > 10
