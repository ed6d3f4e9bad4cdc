"""The management API over real HTTP: uvicorn on a loopback port, a real processor in a
thread, the embedded log, state store and SQLite catalog in a temporary data directory."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_process import serving

from audience_manager.api.management import create_app
from audience_manager.backends import Backends, open_backends
from audience_manager.catalog import CatalogWatcher
from audience_manager.config import Settings
from audience_manager.processor.codec import WireEvent, encode_event
from audience_manager.processor.runtime import EVENTS, Processor, ProcessorConfig

HIGH_VALUE = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
BUYERS = {"conditions": [{"field": "purchaseCount", "operator": "gte", "value": 1}]}
SEGMENT_KEYS = {"id", "name", "type", "rules", "status", "version", "size", "createdAt"}
SEGMENT_KEYS |= {"updatedAt", "description", "statusProgress", "statusReason"}


@contextmanager
def processing(settings: Settings) -> Iterator[None]:
    """A processor over its own backends (as its own process would have), in a thread."""
    backends = open_backends(settings)
    watcher = CatalogWatcher(settings.catalog, poll_every=0.02)
    config = ProcessorConfig(snapshots=settings.snapshot_dir, poll_timeout=0.02)
    processor = Processor(backends.bus, backends.store, backends.catalog, config, watcher)
    stop = threading.Event()
    thread = threading.Thread(target=processor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        watcher.close()
        backends.close()


@dataclass
class Platform:
    """The running app, a client for it, and the backends it uses (events go in here)."""

    client: httpx.Client
    backends: Backends

    def send(self, *events: WireEvent) -> None:
        self.backends.bus.publish(EVENTS, [(e.user_id, encode_event(e)) for e in events])

    def create(self, name: str, rules: Any = None, kind: str = "DYNAMIC") -> dict[str, Any]:
        body = {"name": name, "type": kind, **({"rules": rules} if rules else {})}
        response = self.client.post("/api/segments", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until every accepted event is applied and every segment is ACTIVE."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lag = self.client.get("/api/status").json()["processor"]["lag"]
            items = self.client.get("/api/segments", params={"limit": 1000}).json()["items"]
            if lag == 0 and all(s["status"] == "ACTIVE" for s in items):
                return
            time.sleep(0.02)
        raise AssertionError("the processor did not catch up")

    def count(self, expression: Any) -> int:
        response = self.client.post("/api/audiences/count", json=expression)
        assert response.status_code == 200, response.text
        value: int = response.json()["count"]
        return value


def event(user: str, kind: str = "purchase", **fields: Any) -> WireEvent:
    now = int(time.time() * 1000)
    traits = fields.pop("traits", None)
    return WireEvent(user_id=user, event_type=kind, timestamp=now, properties=fields, traits=traits)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    settings = Settings(data_dir=tmp_path / "data", partitions=4, fsync=False)
    backends = open_backends(settings, migrate_catalog=True)
    with (
        processing(settings),
        serving(create_app(settings, backends)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield Platform(client, backends)
    backends.close()


def assert_error(response: httpx.Response, status: int, *paths: str) -> dict[str, Any]:
    """The one error shape, with the status and (when given) the detail paths."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["message"], str)
    assert error["message"]
    if paths:
        assert [d["path"] for d in error["details"]] == list(paths), error
    return error


def test_the_seed_walkthrough(platform: Platform) -> None:
    created = platform.create("High Value Users", HIGH_VALUE)
    assert set(created) == SEGMENT_KEYS
    assert (created["type"], created["version"], created["size"]) == ("DYNAMIC", 1, 0)
    assert created["rules"] == HIGH_VALUE
    platform.send(event("user123", amount=1500, category="electronics"), event("u2", amount=20))
    platform.settle()

    client, segment_id = platform.client, created["id"]
    named = [{"id": segment_id, "name": "High Value Users"}]
    assert client.get("/api/users/user123/segments").json() == {
        "userId": "user123",
        "segments": named,
    }
    profile = client.get("/api/users/user123").json()
    assert set(profile) == {"userId", "traits", "attributes", "segments", "firstSeen", "lastSeen"}
    assert (profile["attributes"]["totalSpent"], profile["segments"]) == (1500, named)
    assert client.get(f"/api/segments/{segment_id}/members").json() == {
        "members": ["user123"],
        "nextCursor": None,
    }
    read = client.get(f"/api/segments/{segment_id}").json()
    assert (read["status"], read["size"], read["statusProgress"]) == ("ACTIVE", 1, 1.0)


def test_segments_are_created_listed_replaced_and_deleted(platform: Platform) -> None:
    client = platform.client
    ids = [platform.create(f"S{i}", BUYERS)["id"] for i in range(3)]
    first = client.get("/api/segments", params={"limit": 2}).json()
    assert [s["id"] for s in first["items"]] == ids[:2]
    rest = client.get("/api/segments", params={"limit": 2, "cursor": first["nextCursor"]}).json()
    assert ([s["id"] for s in rest["items"]], rest["nextCursor"]) == (ids[2:], None)

    body = {"name": "Renamed", "description": "whole", "type": "DYNAMIC", "rules": HIGH_VALUE}
    replaced = client.put(f"/api/segments/{ids[0]}", json=body).json()
    assert (replaced["name"], replaced["version"], replaced["rules"]) == ("Renamed", 2, HIGH_VALUE)
    assert client.get("/api/segments/Renamed").json()["id"] == ids[0]

    assert client.delete(f"/api/segments/{ids[1]}").status_code == 204
    assert_error(client.get(f"/api/segments/{ids[1]}"), 404)
    listed = client.get("/api/segments").json()["items"]
    assert [s["id"] for s in listed] == [ids[0], ids[2]]


def test_every_client_error_has_the_one_shape(platform: Platform) -> None:
    client = platform.client
    dynamic = platform.create("Dynamic", BUYERS)
    referrer = platform.create("Referrer", {"conditions": [{"segment": "Dynamic"}]})
    static = platform.create("Static", kind="STATIC")
    platform.send(event("u1", amount=5))
    platform.settle()
    missing = "seg_0000000000000000"

    for path in ("/api/segments", "/api/audiences/count", "/api/segments/preview"):
        truncated = client.post(
            path, content=b'{"name": ', headers={"content-type": "application/json"}
        )
        assert assert_error(truncated, 400)["code"] == "malformed_json"
    for method, path in [
        ("GET", f"/api/segments/{missing}"),
        ("DELETE", f"/api/segments/{missing}"),
        ("GET", f"/api/segments/{missing}/members"),
        ("GET", f"/api/segments/{missing}/export"),
        ("GET", "/api/users/nobody"),
        ("GET", "/api/users/nobody/segments"),
        ("GET", f"/api/users/nobody/segments/{dynamic['id']}/explain"),
        ("GET", f"/api/users/u1/segments/{missing}/explain"),
        ("DELETE", "/api/users/nobody"),
        ("GET", "/api/attributes/nothing"),
        ("GET", "/api/no-such-route"),
    ]:
        assert_error(client.request(method, path), 404)
    body = {"name": "X", "rules": BUYERS}
    assert_error(client.put(f"/api/segments/{missing}", json=body), 404)

    assert_error(client.post("/api/segments", json={"name": "Dynamic", "rules": BUYERS}), 409)
    assert_error(client.delete(f"/api/segments/{dynamic['id']}"), 409)
    upload = {"userIds": ["a"]}
    assert_error(client.post(f"/api/segments/{dynamic['id']}/members", json=upload), 409)

    bad_rules = {"conditions": [{"field": "totalSpent", "operator": "bigger", "value": 1}]}
    invalid = client.post("/api/segments", json={"name": "Bad", "rules": bad_rules})
    assert_error(invalid, 422, "rules.conditions[0].operator")
    unknown = {"conditions": [BUYERS["conditions"][0], {"segment": "Nope"}]}
    invalid = client.post("/api/segments", json={"name": "Bad", "rules": unknown})
    assert_error(invalid, 422, "rules.conditions[1].segment")
    itself = {"name": "Dynamic", "rules": {"conditions": [{"segment": "Dynamic"}]}}
    assert_error(
        client.put(f"/api/segments/{dynamic['id']}", json=itself),
        422,
        "rules.conditions[0].segment",
    )
    cycle = {"name": "Dynamic", "rules": {"conditions": [{"not": {"segment": "Referrer"}}]}}
    cyclic = assert_error(client.put(f"/api/segments/{dynamic['id']}", json=cycle), 422)
    assert cyclic["details"][0]["path"] == "rules.conditions[0].not.segment"
    assert referrer["id"] != dynamic["id"]
    retyped = {"name": "Static", "type": "DYNAMIC", "rules": BUYERS}
    assert_error(client.put(f"/api/segments/{static['id']}", json=retyped), 422, "type")
    assert_error(client.post("/api/segments", json={"rules": BUYERS}), 422, "name")

    members = f"/api/segments/{dynamic['id']}/members"
    assert_error(client.get(members, params={"limit": 10_001}), 422, "limit")
    assert_error(client.get(members, params={"limit": 0}), 422, "limit")
    assert_error(client.get(members, params={"cursor": "bm90LWEtY3Vyc29y"}), 422, "cursor")
    assert_error(client.get("/api/segments", params={"limit": 1001}), 422, "limit")
    assert_error(client.get("/api/segments", params={"cursor": "%%%"}), 422, "cursor")
    export = f"/api/segments/{dynamic['id']}/export"
    assert_error(client.get(export, params={"format": "xml"}), 422, "format")
    too_many = {"userIds": [str(i) for i in range(100_001)]}
    assert_error(client.put(f"/api/segments/{static['id']}/members", json=too_many), 422)
    empty_id = {"userIds": ["ok", ""]}
    assert_error(client.post(f"/api/segments/{static['id']}/members", json=empty_id), 422)
    assert_error(client.get("/api/segments/overlap"), 422, "ids")
    assert_error(client.get("/api/segments/overlap", params={"ids": "Dynamic,Nope"}), 422)


def test_members_are_paged_and_exported(platform: Platform) -> None:
    users = [f"user{i:02d}" for i in range(23)] + ['needs "quoting", yes']
    segment = platform.create("Buyers", BUYERS)
    platform.send(*(event(user, amount=1) for user in users), event("browser", "page_view"))
    platform.settle()

    client, seen, cursor = platform.client, [], None
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/api/segments/{segment['id']}/members", params=params).json()
        seen += page["members"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(users)

    exported = client.get(f"/api/segments/{segment['id']}/export", params={"format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["content-disposition"].startswith("attachment")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows == [["userId"], *([user] for user in seen)]
    ndjson = client.get(f"/api/segments/{segment['id']}/export", params={"format": "ndjson"})
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line)["userId"] for line in ndjson.text.splitlines()] == seen


def test_static_members_are_uploaded(platform: Platform) -> None:
    client = platform.client
    segment = platform.create("Uploaded", kind="STATIC")
    path = f"/api/segments/{segment['id']}/members"
    assert client.put(path, json={"userIds": ["a", "b", "c"]}).json() == {"size": 3}
    assert client.post(path, json={"userIds": ["d", "a"]}).json() == {"size": 4}
    removed = client.request("DELETE", path, json={"userIds": ["a", "zz"]})
    assert removed.json() == {"size": 3}
    assert sorted(client.get(path).json()["members"]) == ["b", "c", "d"]
    assert client.get(f"/api/segments/{segment['id']}").json()["size"] == 3
    assert client.get("/api/users/d/segments").json()["segments"][0]["id"] == segment["id"]


def test_a_user_is_erased_everywhere(platform: Platform) -> None:
    segment = platform.create("High Value Users", HIGH_VALUE)
    platform.send(event("gone", amount=5000), event("kept", amount=5000))
    platform.settle()
    assert platform.client.delete("/api/users/gone").status_code == 204
    assert_error(platform.client.get("/api/users/gone"), 404)
    members = platform.client.get(f"/api/segments/{segment['id']}/members").json()
    assert members["members"] == ["kept"]
    assert platform.count({"or": ["High Value Users"]}) == 1
    assert platform.client.get(f"/api/segments/{segment['id']}").json()["size"] == 1


def test_explain_tells_which_conditions_held(platform: Platform) -> None:
    segment = platform.create("High Value Users", HIGH_VALUE)
    platform.send(event("user123", amount=1500))
    platform.settle()
    response = platform.client.get(f"/api/users/user123/segments/{segment['id']}/explain")
    assert response.status_code == 200, response.text
    explained = response.json()
    assert (explained["member"], explained["held"]) == (True, True)
    leaf = explained["rules"]["conditions"][0]
    assert (leaf["path"], leaf["actual"], leaf["held"]) == ("rules.conditions[0]", 1500, True)


def test_computed_attributes_are_managed(platform: Platform) -> None:
    client = platform.client
    body = {
        "name": "electronicsSpent",
        "eventType": "purchase",
        "aggregate": "sum",
        "property": "amount",
        "where": [{"field": "category", "operator": "eq", "value": "electronics"}],
    }
    created = client.post("/api/attributes", json=body)
    assert created.status_code == 201, created.text
    assert (created.json()["name"], created.json()["version"]) == ("electronicsSpent", 1)
    assert_error(client.post("/api/attributes", json=body), 409)
    assert_error(client.post("/api/attributes", json={**body, "name": "totalSpent"}), 422)
    assert [a["name"] for a in client.get("/api/attributes").json()["items"]] == [body["name"]]
    replaced = client.put("/api/attributes/electronicsSpent", json={**body, "aggregate": "max"})
    assert (replaced.json()["aggregate"], replaced.json()["version"]) == ("max", 2)
    assert client.get("/api/attributes/electronicsSpent").json()["aggregate"] == "max"

    rule = {"conditions": [{"field": "electronicsSpent", "operator": "gt", "value": 100}]}
    user = platform.create("Electronics", rule)
    platform.send(event("u1", amount=500, category="electronics"))
    platform.settle()
    assert platform.client.get("/api/users/u1/segments").json()["segments"][0]["id"] == user["id"]
    assert_error(client.delete("/api/attributes/electronicsSpent"), 409)
    assert client.delete(f"/api/segments/{user['id']}").status_code == 204
    assert client.delete("/api/attributes/electronicsSpent").status_code == 204
    assert_error(client.get("/api/attributes/electronicsSpent"), 404)


def test_health_status_metrics_and_docs(platform: Platform) -> None:
    client = platform.client
    assert client.get("/health").json() == {"status": "UP"}
    assert client.get("/actuator/health").json() == {"status": "UP"}
    ready = client.get("/health/ready").json()
    assert ready == {"status": "UP", "checks": {"catalog": "UP", "store": "UP", "bus": "UP"}}
    assert client.get("/api/status").json()["processor"]["lag"] == 0
    assert "am_http_requests_total" in client.get("/metrics").text
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    tags = {tag for path in spec["paths"].values() for op in path.values() for tag in op["tags"]}
    assert {"segments", "members", "audiences", "users", "attributes"} <= tags
