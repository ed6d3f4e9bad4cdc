"""The whole platform as ``audience-manager serve`` runs it, over real HTTP."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from serve_process import Served

from audience_manager.bus.embedded import EmbeddedEventBus
from audience_manager.engine import Engine, Event, ManualClock, SegmentDefinition
from audience_manager.rules.model import parse_rules

HIGH_VALUE = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    platform = Served(tmp_path / "data")
    platform.start()
    yield platform
    if platform.process is not None and platform.process.poll() is None:
        platform.stop()


def test_the_seed_walkthrough(served: Served) -> None:
    created = httpx.post(
        served.management + "/api/segments",
        json={"name": "High Value Users", "type": "DYNAMIC", "rules": HIGH_VALUE},
    )
    assert created.status_code == 201, created.text
    segment = created.json()
    sent = httpx.post(
        served.ingestion + "/api/events",
        json={
            "userId": "user123",
            "eventType": "purchase",
            "properties": {"amount": 1500, "category": "electronics"},
        },
    )
    assert sent.status_code == 202
    assert sent.json() == {"accepted": 1}

    served.wait_applied()
    served.wait_active(segment["id"])
    listed = httpx.get(served.management + "/api/users/user123/segments").json()
    assert listed == {
        "userId": "user123",
        "segments": [{"id": segment["id"], "name": "High Value Users"}],
    }
    members = httpx.get(f"{served.management}/api/segments/{segment['id']}/members").json()
    assert members == {"members": ["user123"], "nextCursor": None}
    assert served.stop() == 0


NUMBERS = itertools.count()


def _send_forever(
    served: Served, accepted: list[dict[str, Any]], stop: threading.Event, seed: int
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=served.ingestion, timeout=5) as client:
        while not stop.is_set():
            batch = [
                {
                    "userId": f"u{rng.randrange(40)}",
                    "eventType": "purchase",
                    "properties": {"amount": rng.randrange(1, 500), "n": next(NUMBERS)},
                    "timestamp": 1_767_225_600_000 + len(accepted),
                }
                for _ in range(rng.randrange(1, 50))
            ]
            try:
                response = client.post("/api/events/batch", json={"events": batch})
            except httpx.TransportError:
                return  # the server is gone; only what got a 202 counts
            if response.status_code == 202:
                accepted.extend(batch)


def test_every_accepted_event_is_applied_exactly_once_across_kill_9(served: Served) -> None:
    created = httpx.post(
        served.management + "/api/segments", json={"name": "High", "rules": HIGH_VALUE}
    ).json()
    accepted: list[dict[str, Any]] = []
    for round_ in range(3):
        stop = threading.Event()
        sender = threading.Thread(target=_send_forever, args=(served, accepted, stop, round_))
        sender.start()
        time.sleep(random.uniform(0.5, 2.0))
        served.kill()
        stop.set()
        sender.join()
        served.start()
    served.wait_applied()
    served.wait_active(created["id"])
    assert accepted, "nothing was accepted"

    # A batch may be durable although its 202 never arrived (killed in between), so the
    # truth is the log: every accepted event is in it once, and nothing is in it twice.
    logged = _logged_events(served.data_dir / "log")
    numbers = Counter(e["properties"]["n"] for e in logged)
    assert [n for n, times in numbers.items() if times > 1] == []
    missing = {e["properties"]["n"] for e in accepted} - set(numbers)
    assert missing == set(), f"{len(missing)} accepted events are not in the log"

    # State equals the engine run over exactly the logged events.
    engine = Engine(ManualClock(1_767_225_600_000))
    engine.upsert_segment(SegmentDefinition("high", "High", parse_rules(HIGH_VALUE)))
    engine.apply(
        [Event(e["userId"], e["eventType"], e["timestamp"], e["properties"]) for e in logged]
    )
    for user in sorted({e["userId"] for e in logged}):
        profile = httpx.get(f"{served.management}/api/users/{user}").json()
        expected = engine.profile(user)
        assert expected is not None
        assert profile["attributes"] == expected["attributes"], user
    members = httpx.get(
        f"{served.management}/api/segments/{created['id']}/members", params={"limit": 10_000}
    ).json()["members"]
    assert set(members) == engine.members("high")


def _logged_events(directory: Path) -> list[dict[str, Any]]:
    bus = EmbeddedEventBus(directory, partitions=8)
    try:
        consumer = bus.consumer("events", "check")
        consumer.assign(None)
        events: list[dict[str, Any]] = []
        while records := consumer.poll(100_000, 0.5):
            events.extend(msgspec.json.decode(r.value) for r in records)
        return events
    finally:
        bus.close()


def test_a_rule_changed_while_events_flow_converges(served: Served) -> None:
    created = httpx.post(
        served.management + "/api/segments", json={"name": "Spenders", "rules": HIGH_VALUE}
    ).json()
    accepted: list[dict[str, Any]] = []
    stop = threading.Event()
    sender = threading.Thread(target=_send_forever, args=(served, accepted, stop, 7))
    sender.start()
    time.sleep(1.0)
    lower = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 300}]}
    replaced = httpx.put(
        f"{served.management}/api/segments/{created['id']}",
        json={"name": "Spenders", "rules": lower},
    )
    assert replaced.status_code == 200, replaced.text
    time.sleep(1.0)
    stop.set()
    sender.join()
    served.wait_applied()
    segment = served.wait_active(created["id"])

    totals: dict[str, int] = {}
    for event in accepted:
        totals[event["userId"]] = totals.get(event["userId"], 0) + event["properties"]["amount"]
    expected = {user for user, total in totals.items() if total > 300}
    members = httpx.get(
        f"{served.management}/api/segments/{created['id']}/members", params={"limit": 10_000}
    ).json()["members"]
    assert set(members) == expected
    assert segment["version"] == 2
