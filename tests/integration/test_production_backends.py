"""The seed walkthrough with every port on its production backend: ``serve`` against
PostgreSQL (catalog), a Kafka-protocol broker (event log) and Valkey (state store)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_process import Served
from services.kafka import KafkaBroker
from services.valkey import ValkeyService

HIGH_VALUE = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}


@pytest.fixture
def served(
    tmp_path: Path, postgres_database: str, kafka_broker: KafkaBroker, valkey_server: ValkeyService
) -> Iterator[Served]:
    env = {
        "AM_CATALOG_URL": postgres_database,
        "AM_BUS_URL": f"kafka://{kafka_broker.bootstrap}",
        "AM_STATE_URL": valkey_server.url,
        "AM_SNAPSHOT_SECONDS": "2",
    }
    platform = Served(tmp_path / "data", env=env)
    platform.start(timeout=120)
    yield platform
    assert platform.stop() == 0


def wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_seed_walkthrough_on_production_backends(served: Served) -> None:
    segment = httpx.post(
        served.management + "/api/segments",
        json={"name": "High Value Users", "rules": HIGH_VALUE},
    ).json()
    served.wait_active(segment["id"])
    events = [
        {"userId": "user123", "eventType": "purchase", "properties": {"amount": 1500}},
        {"userId": "user456", "eventType": "purchase", "properties": {"amount": 20}},
    ]
    for event in events:
        assert httpx.post(served.ingestion + "/api/events", json=event).status_code == 202

    def member() -> bool:
        answer = httpx.get(f"{served.management}/api/users/user123/segments")
        return answer.status_code == 200 and [s["id"] for s in answer.json()["segments"]] == [
            segment["id"]
        ]

    wait_for(member)
    wait_for(lambda: httpx.get(f"{served.management}/api/users/user456").status_code == 200)
    profile = httpx.get(f"{served.management}/api/users/user123").json()
    assert profile["attributes"]["totalSpent"] == 1500
    members = httpx.get(f"{served.management}/api/segments/{segment['id']}/members").json()
    assert members["members"] == ["user123"]
    count = httpx.post(
        f"{served.management}/api/audiences/count", json={"expression": segment["id"]}
    )
    assert count.json()["count"] == 1
