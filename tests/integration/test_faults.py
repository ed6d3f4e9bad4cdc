"""Faults with every port on its production backend: ``serve`` against PostgreSQL, a
Kafka-protocol broker and Valkey, while events stream in over HTTP, has the state store or
the broker killed (SIGKILL) and started again on the same port and data.

Meanwhile the APIs that need the missing server answer 503 with ``Retry-After``; afterwards
the processor carries on by itself (``serve`` never restarts it), and the state is exactly
what one engine run over the logged events gives: every event answered 202 is in the log,
none is in it twice, and each is counted once.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from serve_process import Served
from services.kafka import KafkaBroker, running_tansu
from services.s3 import running_s3
from services.valkey import ValkeyService

from audience_manager.bus.kafka import KafkaEventBus
from audience_manager.engine import Engine, Event, ManualClock, SegmentDefinition
from audience_manager.rules.model import parse_rules

HIGH_VALUE = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
PARTITIONS = 4
USERS = 40
START = 1_767_225_600_000
NUMBERS = itertools.count()
#: Seconds from a server's return to a new event applied, at most: the processor retries
#: within 5 s and joins its group anew, which after a broker restart takes tansu up to about
#: 25 s (it waits out the members that were gone).
RECOVERY = 45.0


@dataclass
class Answer:
    """What one request got: when, its status (0: no answer in time), its events."""

    at: float
    status: int
    retry_after: str | None
    events: list[dict[str, Any]]


@dataclass
class Stream:
    """Purchases sent from a thread, one request after the other, single events and
    batches in turn, until stopped; every answer is kept."""

    base: str
    seed: int
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Stream:
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the sender did not stop"

    def accepted(self) -> list[dict[str, Any]]:
        return [e for a in self.answers if a.status == 202 for e in a.events]

    def answered_between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at <= end]

    def _send(self) -> None:
        rng = random.Random(self.seed)
        with httpx.Client(base_url=self.base, timeout=15) as client:
            for request in itertools.count():
                if self._stop.is_set():
                    return
                events = [
                    {
                        "userId": f"u{rng.randrange(USERS)}",
                        "eventType": "purchase",
                        "properties": {"amount": rng.randrange(1, 200), "n": next(NUMBERS)},
                        "timestamp": START + request,
                    }
                    for _ in range(1 if request % 2 else rng.randrange(1, 20))
                ]
                try:
                    if len(events) == 1:
                        response = client.post("/api/events", json=events[0])
                    else:
                        response = client.post("/api/events/batch", json={"events": events})
                except httpx.TimeoutException:
                    self.answers.append(Answer(time.monotonic(), 0, None, events))
                    continue
                retry_after = response.headers.get("Retry-After")
                self.answers.append(
                    Answer(time.monotonic(), response.status_code, retry_after, events)
                )
                if response.status_code == 503:
                    time.sleep(0.05)  # a client would wait Retry-After; the test wants answers


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def logged_events(bootstrap: str) -> list[dict[str, Any]]:
    """Every event in the ``events`` topic, read from the start by a group of its own, up to
    the high watermark of every partition and then until nothing more comes."""
    with KafkaEventBus(bootstrap, partitions=PARTITIONS, timeout=10) as bus:
        ends = bus.end_offsets("events")
        consumer = bus.consumer("events", f"check-{uuid.uuid4().hex[:8]}")
        consumer.assign(None)
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while True:
            records = consumer.poll(100_000, 1.0)
            events.extend(msgspec.json.decode(r.value) for r in records)
            reached = all(consumer.positions()[p] >= end for p, end in ends.items())
            if reached and not records:
                return events
            assert time.monotonic() < deadline, f"the log is not read: {consumer.positions()}"


def applied(served: Served) -> int:
    """Records the processor has applied (committed), by ``GET /api/status`` (-1 while it
    cannot tell)."""
    response = httpx.get(served.management + "/api/status", timeout=5)
    return int(response.json()["processor"]["applied"]) if response.status_code == 200 else -1


def seconds_to_recover(served: Served, since: float) -> float:
    """Seconds from ``since`` until an event for a new user, sent until one is answered 202,
    is in that user's profile: the processor applies new events again."""
    user = f"new-{uuid.uuid4().hex[:8]}"

    def accepted() -> bool:
        # A new event every time: one answered 503 may reach the log all the same.
        event = {
            "userId": user,
            "eventType": "purchase",
            "properties": {"amount": 1, "n": next(NUMBERS)},
            "timestamp": START,
        }
        return client.post(served.ingestion + "/api/events", json=event).status_code == 202

    with httpx.Client(timeout=10) as client:
        wait_for(accepted, 60, "ingestion accepts events again")
        profile = f"{served.management}/api/users/{user}"
        wait_for(lambda: client.get(profile).status_code == 200, 60, "the processor recovers")
    return time.monotonic() - since


def assert_unavailable(response: httpx.Response, started: float) -> None:
    """A 503 with ``Retry-After``, answered within a few seconds of ``started``."""
    what = f"{response.request.method} {response.request.url.path}"
    assert time.monotonic() - started < 5, f"{what} answers at once"
    assert response.status_code == 503, (what, response.text)
    assert response.headers["Retry-After"] == "2", what
    assert response.json()["error"]["code"] == "unavailable", what


def assert_applied_exactly_once(
    served: Served, bootstrap: str, accepted: list[dict[str, Any]], segment_id: str
) -> None:
    """Every accepted event is logged once, and the state is the engine's over the log."""
    wanted = {e["properties"]["n"] for e in accepted}
    deadline = time.monotonic() + 90
    while True:  # until a read of the log is whole and the processor has applied all of it
        logged = logged_events(bootstrap)
        missing = wanted - {e["properties"]["n"] for e in logged}
        done = applied(served)
        if not missing and done == len(logged):
            break
        assert time.monotonic() < deadline, (
            f"{len(missing)} events answered 202 are not in the log; "
            f"{done} records applied, {len(logged)} in the log"
        )
        time.sleep(0.5)
    numbers = [e["properties"]["n"] for e in logged]
    assert len(numbers) == len(set(numbers)), "an event is in the log twice"

    engine = Engine(ManualClock(START))
    engine.upsert_segment(SegmentDefinition("high", "High", parse_rules(HIGH_VALUE)))
    engine.apply(
        [Event(e["userId"], e["eventType"], e["timestamp"], e["properties"]) for e in logged]
    )
    with httpx.Client(base_url=served.management, timeout=10) as client:
        for user in sorted({e["userId"] for e in logged}):
            expected = engine.profile(user)
            assert expected is not None
            profile = client.get(f"/api/users/{user}").json()
            assert profile["attributes"] == expected["attributes"], user
        members = client.get(
            f"/api/segments/{segment_id}/members", params={"limit": 10_000}
        ).json()["members"]
    assert set(members) == engine.members("high")


def assert_never_restarted(served: Served) -> None:
    """``serve`` restarts a part that exits: the processor must have carried on instead."""
    log = (served.data_dir.parent / f"{served.data_dir.name}-serve.log").read_text()
    assert "restarting" not in log, log[-3000:]


def start_platform(tmp_path: Path, catalog_url: str, broker: KafkaBroker, state_url: str) -> Served:
    env = {
        "AM_CATALOG_URL": catalog_url,
        "AM_BUS_URL": f"kafka://{broker.bootstrap}",
        "AM_STATE_URL": state_url,
        "AM_PARTITIONS": str(PARTITIONS),
        "AM_SNAPSHOT_SECONDS": "2",
        # The processor rejoins its group after a fault; tansu's join takes half of this.
        "AM_BUS_SESSION_TIMEOUT": "6",
    }
    served = Served(tmp_path / "data", env=env)
    served.start(timeout=120)
    return served


def create_segment(served: Served) -> str:
    created = httpx.post(
        served.management + "/api/segments", json={"name": "High", "rules": HIGH_VALUE}
    )
    assert created.status_code == 201, created.text
    segment_id: str = created.json()["id"]
    served.wait_active(segment_id)
    return segment_id


@pytest.fixture
def broker() -> Iterator[KafkaBroker]:
    with running_tansu() as started:
        yield started


def test_a_state_store_restart_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, postgres_database: str, broker: KafkaBroker, own_valkey: ValkeyService
) -> None:
    served = start_platform(tmp_path, postgres_database, broker, own_valkey.url)
    try:
        segment_id = create_segment(served)
        with Stream(served.ingestion, seed=1) as stream:
            wait_for(lambda: applied(served) > 100, 30, "events are applied")
            with own_valkey.down(kill=True), httpx.Client(timeout=10) as client:
                down = time.monotonic()
                for method, path, body in [
                    ("GET", "/api/users/u1", None),
                    ("GET", "/api/users/u1/segments", None),
                    ("GET", f"/api/segments/{segment_id}/members", None),
                    ("POST", "/api/audiences/count", {"expression": segment_id}),
                    ("GET", "/api/status", None),
                ]:
                    started = time.monotonic()
                    response = client.request(method, served.management + path, json=body)
                    assert_unavailable(response, started)
                ready = client.get(served.management + "/health/ready")
                assert (ready.status_code, ready.json()["checks"]["store"]) == (503, "DOWN")
                time.sleep(max(0.0, 2.0 - (time.monotonic() - down)))
                during = (down, time.monotonic())
            recovery = seconds_to_recover(served, time.monotonic())
            time.sleep(1.0)  # more events after the restart
        # Ingestion does not need the state store: it went on accepting events.
        assert any(a.status == 202 for a in stream.answered_between(*during))
        assert_applied_exactly_once(served, broker.bootstrap, stream.accepted(), segment_id)
        assert_never_restarted(served)
    finally:
        assert served.stop() == 0
    print(f"state store restart to a new event applied: {recovery * 1000:.0f} ms")
    assert recovery < RECOVERY


def test_a_broker_restart_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, postgres_database: str, own_valkey: ValkeyService
) -> None:
    with running_s3() as bucket, running_tansu(bucket) as broker:
        served = start_platform(tmp_path, postgres_database, broker, own_valkey.url)
        try:
            segment_id = create_segment(served)
            with Stream(served.ingestion, seed=2) as stream:
                wait_for(lambda: applied(served) > 100, 30, "events are applied")
                with broker.down(), httpx.Client(timeout=10) as client:
                    down = time.monotonic()
                    # Each event its own number: one answered 503 may reach the log after all.
                    events = [
                        {
                            "userId": "u1",
                            "eventType": "purchase",
                            "properties": {"amount": 1, "n": next(NUMBERS)},
                            "timestamp": START,
                        }
                        for _ in range(3)
                    ]
                    for path, body in [
                        ("/api/events", events[0]),
                        ("/api/events/batch", {"events": events[1:]}),
                    ]:
                        started = time.monotonic()
                        response = client.post(served.ingestion + path, json=body)
                        assert_unavailable(response, started)
                    started = time.monotonic()
                    assert_unavailable(client.get(served.management + "/api/status"), started)
                    # Reads of the state store need no broker.
                    profile = client.get(served.management + "/api/users/u1")
                    assert profile.status_code == 200, profile.text
                    time.sleep(max(0.0, 3.0 - (time.monotonic() - down)))
                    during = (down + 1.0, time.monotonic())
                recovery = seconds_to_recover(served, time.monotonic())
                time.sleep(1.0)  # more events after the restart
            # Nothing was accepted while the broker was away: the sender was told to retry.
            answers = stream.answered_between(*during)
            assert answers, "the sender got no answer while the broker was down"
            assert {(a.status, a.retry_after) for a in answers} == {(503, "2")}
            assert_applied_exactly_once(served, broker.bootstrap, stream.accepted(), segment_id)
            assert_never_restarted(served)
        finally:
            assert served.stop() == 0
    print(f"broker restart to a new event applied: {recovery * 1000:.0f} ms")
    assert recovery < RECOVERY
