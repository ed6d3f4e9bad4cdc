"""The ingestion API over real HTTP: uvicorn on a loopback port, the embedded event log."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI
from serve_process import serving

from audience_manager.api.ingestion import create_app
from audience_manager.backends import Backends, open_backends
from audience_manager.bus.base import EventBus, Record
from audience_manager.config import ApiKey, Settings
from audience_manager.processor.codec import WireEvent

SEED_EVENT = {
    "userId": "user123",
    "eventType": "purchase",
    "properties": {"amount": 1500, "category": "electronics"},
}
NDJSON = {"content-type": "application/x-ndjson"}


@dataclass
class Ingestion:
    """A running ingestion app, a client for it and the backends it publishes to."""

    app: FastAPI
    client: httpx.Client
    backends: Backends

    @property
    def bus(self) -> EventBus:
        return self.backends.bus

    def ends(self) -> dict[int, int]:
        return self.bus.end_offsets("events")

    def logged(self) -> list[WireEvent]:
        """Every event in the log, read back with a consumer."""
        expected = sum(self.ends().values())
        found: list[Record] = []
        with self.bus.consumer("events", "t") as consumer:
            consumer.assign()
            deadline = time.monotonic() + 10
            while len(found) < expected and time.monotonic() < deadline:
                found.extend(consumer.poll(timeout=0.5))
        decoder = msgspec.json.Decoder(WireEvent)
        assert all(record.key == decoder.decode(record.value).user_id for record in found)
        return [decoder.decode(record.value) for record in found]


Start = Callable[..., Ingestion]


@pytest.fixture(params=[True, False], ids=["front", "fastapi-routes"])
def start(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Start]:
    """Start ingestion servers on fresh data directories, with settings overrides.

    Every test runs twice: with the lean front serving the event routes (the default)
    and with FastAPI serving them, which must answer identically.
    """
    numbers = itertools.count()
    with ExitStack() as stack:

        def _start(**overrides: Any) -> Ingestion:
            settings = Settings(data_dir=tmp_path / f"data{next(numbers)}", **overrides)
            backends = open_backends(settings)
            stack.callback(backends.close)
            app = create_app(settings, backends, fast_path=request.param)
            url = stack.enter_context(serving(app))
            client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
            return Ingestion(app, client, backends)

        yield _start


@pytest.fixture
def ingestion(start: Start) -> Ingestion:
    return start()


def test_the_seed_event_is_durably_in_the_log_when_accepted(ingestion: Ingestion) -> None:
    sent = ingestion.client.post(
        "/api/events", content=json.dumps(SEED_EVENT), headers={"content-type": "application/json"}
    )
    assert sent.status_code == 202
    assert sent.json() == {"accepted": 1}
    [event] = ingestion.logged()
    assert (event.user_id, event.event_type) == ("user123", "purchase")
    assert event.properties == {"amount": 1500, "category": "electronics"}
    assert event.timestamp == event.received_at  # no timestamp given: the arrival time
    assert abs(event.received_at - time.time() * 1000) < 60_000


def test_a_given_timestamp_is_resolved_to_epoch_milliseconds(ingestion: Ingestion) -> None:
    sent = ingestion.client.post(
        "/api/events",
        json={**SEED_EVENT, "timestamp": "2025-06-01T14:30:00+02:00", "messageId": "m-1"},
    )
    assert sent.status_code == 202
    [event] = ingestion.logged()
    assert (event.timestamp, event.message_id) == (1_748_781_000_000, "m-1")


def events(count: int, user: str = "u") -> list[dict[str, Any]]:
    return [
        {"userId": f"{user}{i % 7}", "eventType": "page_view", "properties": {"n": i}}
        for i in range(count)
    ]


@pytest.mark.parametrize("form", ["object", "array", "ndjson"])
def test_a_batch_is_accepted_whole(ingestion: Ingestion, form: str) -> None:
    batch = events(250)
    if form == "object":
        sent = ingestion.client.post("/api/events/batch", json={"events": batch})
    elif form == "array":
        sent = ingestion.client.post("/api/events/batch", json=batch)
    else:
        body = "\n".join(json.dumps(e) for e in batch) + "\n"
        sent = ingestion.client.post("/api/events/batch", content=body, headers=NDJSON)
    assert sent.status_code == 202, sent.text
    assert sent.json() == {"accepted": 250}
    logged = ingestion.logged()
    assert len(logged) == 250
    for user in {e["userId"] for e in batch}:  # in order within each user (partition)
        sent_n = [e["properties"]["n"] for e in batch if e["userId"] == user]
        assert [e.properties["n"] for e in logged if e.user_id == user] == sent_n


def test_a_batch_with_an_invalid_event_lands_nothing(ingestion: Ingestion) -> None:
    ingestion.client.post("/api/events", json=SEED_EVENT)
    before = ingestion.ends()
    batch = events(10)
    batch[3]["eventType"] = "not valid!"
    batch[7]["timestamp"] = -5
    refused = ingestion.client.post("/api/events/batch", json={"events": batch})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_request"
    assert [(d["index"], d["path"]) for d in error["details"]] == [
        (3, "events[3].eventType"),
        (7, "events[7].timestamp"),
    ]
    assert all(d["message"] for d in error["details"])
    assert ingestion.ends() == before
    assert len(ingestion.logged()) == 1


def test_ndjson_lines_that_are_not_json_are_named_by_index(ingestion: Ingestion) -> None:
    body = "\n".join([json.dumps(SEED_EVENT), "{not json", json.dumps(SEED_EVENT)])
    refused = ingestion.client.post("/api/events/batch", content=body, headers=NDJSON)
    assert refused.status_code == 422
    [detail] = refused.json()["error"]["details"]
    assert (detail["index"], detail["path"]) == (1, "events[1]")
    assert sum(ingestion.ends().values()) == 0


def test_batch_size_limits(ingestion: Ingestion) -> None:
    too_many = ingestion.client.post("/api/events/batch", json=events(1001))
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "too_many_events"
    assert "at most 1000" in too_many.json()["error"]["message"]
    empty = ingestion.client.post("/api/events/batch", json={"events": []})
    assert empty.status_code == 422
    assert empty.json()["error"]["details"][0]["path"] == "events"
    assert ingestion.client.post("/api/events/batch", json=events(1000)).status_code == 202
    assert sum(ingestion.ends().values()) == 1000


@pytest.mark.parametrize("path", ["/api/events", "/api/events/batch"])
@pytest.mark.parametrize("body", [b"{", b"", b"{'userId': 'x'}", b'{"userId": "u",}'])
def test_malformed_json_is_a_400(ingestion: Ingestion, path: str, body: bytes) -> None:
    response = ingestion.client.post(
        path, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_an_invalid_event_is_a_422_with_paths(ingestion: Ingestion) -> None:
    response = ingestion.client.post(
        "/api/events", json={"userId": "", "eventType": "purchase", "colour": "red"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"path": "colour", "message": response.json()["error"]["details"][0]["message"]},
        {"path": "userId", "message": "must not be empty"},
    ]
    assert sum(ingestion.ends().values()) == 0


def test_an_oversized_body_is_a_413(ingestion: Ingestion) -> None:
    body = b'{"userId": "u", "eventType": "e", "properties": {"p": "' + b"x" * (2 << 20) + b'"}}'
    response = ingestion.client.post("/api/events", content=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_chunked_body_is_read_whole_and_held_to_the_limit(ingestion: Ingestion) -> None:
    lines = [json.dumps(e).encode() + b"\n" for e in events(300)]
    sent = ingestion.client.post("/api/events/batch", content=iter(lines), headers=NDJSON)
    assert sent.status_code == 202, sent.text
    assert sent.json() == {"accepted": 300}
    chunks = (b" " * (1 << 16) for _ in range(20))  # 1.25 MiB of whitespace, no length
    too_big = ingestion.client.post("/api/events", content=chunks)
    assert too_big.status_code == 413
    assert sum(ingestion.ends().values()) == 300


def test_other_methods_are_not_allowed(ingestion: Ingestion) -> None:
    response = ingestion.client.get("/api/events")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_api_keys_and_scopes(start: Start) -> None:
    keys = [
        ApiKey(key="ingest-key", scopes=frozenset({"ingest"})),
        ApiKey(key="read-key", scopes=frozenset({"read"})),
        ApiKey(key="admin-key", scopes=frozenset({"admin"})),
    ]
    running = start(api_keys=keys)
    client = running.client

    def post(key: str | None, path: str = "/api/events") -> httpx.Response:
        headers = {"x-api-key": key} if key else {}
        return client.post(path, json=SEED_EVENT, headers=headers)

    assert post(None).status_code == 401
    assert post("wrong").status_code == 401
    assert post("read-key").status_code == 403
    assert post("read-key", "/api/events/batch").status_code == 403
    assert post("ingest-key").status_code == 202
    batch = client.post("/api/events/batch", json=[SEED_EVENT], headers={"x-api-key": "admin-key"})
    assert batch.status_code == 202
    bearer = client.post(
        "/api/events", json=SEED_EVENT, headers={"authorization": "Bearer ingest-key"}
    )
    assert bearer.status_code == 202
    assert post(None).json()["error"]["code"] == "unauthorized"
    assert sum(running.ends().values()) == 3
    for path in ("/health", "/health/ready", "/actuator/health", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.get("/api/status").status_code == 401
    assert client.get("/api/status", headers={"x-api-key": "ingest-key"}).status_code == 403
    assert client.get("/api/status", headers={"x-api-key": "read-key"}).status_code == 200


def test_health_status_and_metrics(ingestion: Ingestion) -> None:
    client = ingestion.client
    assert client.get("/health").json() == {"status": "UP"}
    assert client.get("/actuator/health").json() == {"status": "UP"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "UP", "checks": {"bus": "UP", "store": "UP"}}
    client.post("/api/events", json=SEED_EVENT)
    client.post("/api/events/batch", json=events(20))
    # No processor runs: every accepted event is still to be applied.
    assert client.get("/api/status").json()["processor"]["lag"] == 21
    metrics = client.get("/metrics").text
    assert "am_ingestion_events_accepted_total" in metrics
    assert 'am_http_requests_total{app="ingestion",method="POST",route="/api/events"' in metrics


def test_openapi_describes_both_routes(ingestion: Ingestion) -> None:
    assert ingestion.client.get("/docs").status_code == 200
    spec = ingestion.client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Audience Manager — Event Ingestion"
    single = spec["paths"]["/api/events"]["post"]
    assert single["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "userId",
        "eventType",
    ]
    batch = spec["paths"]["/api/events/batch"]["post"]["requestBody"]["content"]
    assert set(batch) == {"application/json", "application/x-ndjson"}
    assert "202" in single["responses"]
    assert "422" in single["responses"]


def test_a_closed_event_log_is_a_503_with_retry_after(ingestion: Ingestion) -> None:
    assert ingestion.client.post("/api/events", json=SEED_EVENT).status_code == 202
    ingestion.bus.close()
    for path, body in (("/api/events", SEED_EVENT), ("/api/events/batch", events(5))):
        response = ingestion.client.post(path, json=body)
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        assert response.json()["error"]["code"] == "unavailable"
    ready = ingestion.client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.headers["retry-after"]
    assert ready.json()["checks"]["bus"].startswith("DOWN")


def test_an_unusable_log_directory_is_a_503(start: Start, tmp_path: Path) -> None:
    running = start()
    # A file where the topic's directory belongs: the log cannot open the topic to append.
    log_dir = running.backends.bus.directory  # type: ignore[attr-defined]
    (log_dir / "events").write_text("not a directory")
    response = running.client.post("/api/events", json=SEED_EVENT)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert running.client.get("/health/ready").status_code == 503


async def post_over_raw_connections(base_url: str, bodies: list[bytes]) -> list[int]:
    """POST each body to /api/events on its own connection, all sent before any answer."""
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    connections = [await asyncio.open_connection(host, port) for _ in bodies]
    for (_, writer), body in zip(connections, bodies, strict=True):
        head = f"POST /api/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
        writer.write(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    statuses = []
    for reader, writer in connections:
        status_line = await reader.readline()
        statuses.append(int(status_line.split()[1]))
        writer.close()
        await writer.wait_closed()
    return statuses


def test_concurrent_single_events_share_publish_calls(ingestion: Ingestion) -> None:
    bodies = [json.dumps({**SEED_EVENT, "userId": f"u{i}"}).encode() for i in range(200)]
    statuses = asyncio.run(post_over_raw_connections(str(ingestion.client.base_url), bodies))
    assert statuses == [202] * 200
    assert sorted(e.user_id for e in ingestion.logged()) == sorted(f"u{i}" for i in range(200))
    publisher = ingestion.app.state.publisher
    assert publisher.records == 200
    assert publisher.calls < 200  # requests that came while a publish ran shared the next


def test_the_app_opens_and_closes_its_own_backends(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "own")
    with serving(create_app(settings)) as url:
        assert httpx.get(url + "/health/ready").status_code == 200
        assert httpx.post(url + "/api/events", json=SEED_EVENT).status_code == 202
    backends = open_backends(settings)  # the app released the log on shutdown
    try:
        assert sum(backends.bus.end_offsets("events").values()) == 1
        backends.bus.publish("events", [("user123", b"{}")])  # the writer lock is free
    finally:
        backends.close()
