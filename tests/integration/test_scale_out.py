"""Scale-out: two ``audience-manager processor`` processes in one consumer group share the
partitions of a Kafka-protocol log; one is killed while events flow, the other takes its
partitions over, and the final state equals one clean engine run over the same events."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from serve_process import free_port
from services.kafka import KafkaBroker, running_tansu
from services.valkey import ValkeyService

from audience_manager.bus.kafka import KafkaEventBus
from audience_manager.engine import Engine, Event, ManualClock, SegmentDefinition
from audience_manager.processor.relay import CHANGES, RELAYED
from audience_manager.rules.model import parse_rules
from audience_manager.store.redis import RedisStateStore

PARTITIONS = 4
START = 1_767_225_600_000
HIGH = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
FREQUENT = {
    "conditions": [
        {"field": "purchaseCount", "operator": "gte", "value": 4},
        {"field": "country", "operator": "eq", "value": "DE"},
    ]
}


@dataclass
class Cluster:
    """Processes of one platform sharing a data directory, a broker and a Valkey prefix:
    two processors, two management replicas, one ingestion."""

    directory: Path
    env: dict[str, str]
    management: str = field(default_factory=lambda: f"http://127.0.0.1:{free_port()}")
    replica: str = field(default_factory=lambda: f"http://127.0.0.1:{free_port()}")
    ingestion: str = field(default_factory=lambda: f"http://127.0.0.1:{free_port()}")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def command(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``audience-manager ARGS`` as process ``name``."""
        log = (self.directory / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "audience_manager", *args, "--data-dir", str(self.directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def start(self) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "audience_manager",
                "migrate",
                "--data-dir",
                str(self.directory),
            ],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
        )
        for name, base in (("management", self.management), ("replica", self.replica)):
            self.command(name, "management", "--management-port", base.rsplit(":", 1)[1])
        self.command("ingestion", "ingestion", "--ingestion-port", self.ingestion.rsplit(":", 1)[1])
        self.command("processor-a", "processor")
        self.command("processor-b", "processor")
        for base in (self.management, self.replica, self.ingestion):
            wait_for(lambda b=base: _ready(b), 60, f"{base} ready")  # type: ignore[misc]

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> dict[str, int]:
        for process in self.processes.values():
            process.send_signal(signal.SIGINT)
        return {name: process.wait(timeout=60) for name, process in self.processes.items()}

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path, valkey_server: ValkeyService) -> Iterator[tuple[Cluster, KafkaBroker]]:
    with running_tansu() as broker, valkey_server.prefix() as prefix:
        env = {
            "AM_BUS_URL": f"kafka://{broker.bootstrap}",
            "AM_STATE_URL": valkey_server.url,
            "AM_STATE_PREFIX": prefix,
            "AM_PARTITIONS": str(PARTITIONS),
            "AM_SNAPSHOT_SECONDS": "1",
            "AM_BUS_SESSION_TIMEOUT": "6",
        }
        platform = Cluster(tmp_path / "data", env)
        platform.directory.mkdir()
        try:
            platform.start()
            yield platform, broker
        finally:
            codes = platform.stop()
            assert all(code == 0 for code in codes.values()), codes


def _send(cluster: Cluster, stop: threading.Event, seed: int, sent: list[int]) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=cluster.ingestion, timeout=10) as client:
        while not stop.is_set():
            batch = []
            for _ in range(rng.randrange(20, 200)):
                user = f"u{rng.randrange(300)}"
                event: dict[str, Any] = {
                    "userId": user,
                    "eventType": "purchase",
                    "properties": {"amount": rng.randrange(1, 400)},
                    "timestamp": START + rng.randrange(86_400_000),
                }
                if rng.random() < 0.2:
                    event["traits"] = {"country": rng.choice(["DE", "FR"])}
                batch.append(event)
            response = client.post("/api/events/batch", json={"events": batch})
            assert response.status_code == 202, response.text
            sent.append(len(batch))


def _logged(bootstrap: str, topic: str = "events") -> list[dict[str, Any]]:
    """Every record of ``topic`` (the events by default), in partition and offset order."""
    bus = KafkaEventBus(bootstrap, partitions=PARTITIONS)
    try:
        with bus.consumer(topic, f"scale-out-check-{topic}") as consumer:
            consumer.assign(None)
            records = []
            while batch := consumer.poll(100_000, 2.0):
                records.extend(batch)
        records.sort(key=lambda r: (r.partition, r.offset))
        return [msgspec.json.decode(r.value) for r in records]
    finally:
        bus.close()


@pytest.fixture
def clients(cluster: tuple[Cluster, KafkaBroker]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Clients of the two management replicas."""
    platform, _ = cluster
    with (
        httpx.Client(base_url=platform.management, timeout=30) as api,
        httpx.Client(base_url=platform.replica, timeout=30) as replica,
    ):
        yield api, replica


def test_a_processor_killed_hands_its_partitions_to_the_other(
    cluster: tuple[Cluster, KafkaBroker],
    clients: tuple[httpx.Client, httpx.Client],
    valkey_server: ValkeyService,
) -> None:
    platform, broker = cluster
    api, replica = clients
    ids = {}
    for name, rules in (("High", HIGH), ("Frequent in DE", FREQUENT)):
        created = api.post("/api/segments", json={"name": name, "rules": rules})
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    for segment_id in ids.values():
        wait_for(
            lambda s=segment_id: api.get(f"/api/segments/{s}").json()["status"] == "ACTIVE",  # type: ignore[misc]
            90,
            "segments ACTIVE",
        )

    sent: list[int] = []
    stop = threading.Event()
    senders = [threading.Thread(target=_send, args=(platform, stop, s, sent)) for s in (1, 2)]
    for sender in senders:
        sender.start()
    try:
        wait_for(lambda: sum(sent) > 5_000, 60, "events accepted")
        platform.kill("processor-a")
        wait_for(lambda: sum(sent) > 12_000, 60, "more events accepted")
    finally:
        stop.set()
        for sender in senders:
            sender.join()

    logged = _logged(broker.bootstrap)
    assert len(logged) == sum(sent)  # accepted exactly once each
    store = RedisStateStore(valkey_server.url, prefix=platform.env["AM_STATE_PREFIX"])
    ends = KafkaEventBus(broker.bootstrap, partitions=PARTITIONS)
    try:
        # Everything applied: the stored positions reach the end of every partition.
        counted = dict.fromkeys(range(PARTITIONS), 0)
        for event in logged:
            counted[ends.partition_for(event["userId"])] += 1
        wait_for(lambda: store.positions() == counted, 120, f"positions {counted}")
        assert store.applied() == len(logged)  # nothing applied twice
        # Every change line reached the topic (at least once), whichever relay sent it.
        last = store.last_change()
        wait_for(lambda: store.marker(RELAYED) == last, 60, "every change line published")
        lines = dict(store.changes_since(0, limit=last))
        published = [
            {"userId": message["userId"], **change}
            for message in _logged(broker.bootstrap, CHANGES)
            for change in message["changes"]
        ]
        assert {m["sequence"] for m in published} == set(range(1, last + 1))
        for message in published:
            line = lines[message["sequence"]]
            assert (message["segmentId"], message["userId"], message["change"]) == (
                line.segment_id,
                line.user_id,
                line.change,
            )
    finally:
        ends.close()
        store.close()
    # The survivor took the killed one's partitions over: it gained every partition.
    gained = re.findall(r"partitions \[([\d, ]+)\] gained", platform.log("processor-b"))
    assert {int(p) for found in gained for p in found.split(",")} == set(range(PARTITIONS))

    engine = Engine(ManualClock(START))
    engine.upsert_segment(SegmentDefinition(ids["High"], "High", parse_rules(HIGH)))
    definition = SegmentDefinition(ids["Frequent in DE"], "Frequent in DE", parse_rules(FREQUENT))
    engine.upsert_segment(definition)
    engine.apply(
        [
            Event(e["userId"], e["eventType"], e["timestamp"], e["properties"], e.get("traits"))
            for e in logged
        ]
    )
    for segment_id in ids.values():
        for client in (api, replica):  # every replica reads the same state
            members = client.get(f"/api/segments/{segment_id}/members", params={"limit": 10_000})
            assert set(members.json()["members"]) == engine.members(segment_id)
            count = client.post("/api/audiences/count", json={"expression": segment_id}).json()
            assert count["count"] == len(engine.members(segment_id))
    users = sorted({e["userId"] for e in logged})
    for user in random.Random(7).sample(users, 25):
        profile = api.get(f"/api/users/{user}").json()
        expected = engine.profile(user)
        assert expected is not None
        assert profile["attributes"] == expected["attributes"], user
        assert profile["traits"] == expected["traits"], user

    # Requests about every partition are answered by the processor holding each.
    preview = api.post("/api/segments/preview", json={"rules": HIGH, "sample": 5}).json()
    assert preview["size"] == len(engine.members(ids["High"]))
    assert set(preview["sample"]) <= engine.members(ids["High"])
    assert len(preview["sample"]) == min(5, preview["size"])
    member = sorted(engine.members(ids["High"]))[0]
    explained = api.get(f"/api/users/{member}/segments/{ids['High']}/explain")
    assert explained.status_code == 200, explained.text
    assert (explained.json()["member"], explained.json()["held"]) == (True, True)
    not_high = api.post("/api/audiences/count", json={"expression": {"not": ids["High"]}}).json()
    assert not_high["count"] == len(users) - len(engine.members(ids["High"]))
