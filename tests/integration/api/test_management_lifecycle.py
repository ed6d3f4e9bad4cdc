"""The management app's life around its backends over real HTTP: opening its own, API
keys and scopes, and a processor that does not answer (503 with ``Retry-After``, an
erasure still on its way)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from serve_process import serving
from test_management_api import HIGH_VALUE, assert_error, event, processing

from audience_manager.api.management import create_app
from audience_manager.backends import open_backends
from audience_manager.config import ApiKey, Settings
from audience_manager.processor.codec import encode_event
from audience_manager.processor.runtime import EVENTS


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_app_opens_migrates_and_closes_its_own_backends(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", fsync=False)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        created = client.post("/api/segments", json={"name": "S", "rules": HIGH_VALUE})
        assert created.status_code == 201, created.text
        assert client.get("/health/ready").json()["status"] == "UP"
    assert (tmp_path / "data" / "catalog.db").exists()
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        assert [s["name"] for s in client.get("/api/segments").json()["items"]] == ["S"]


def test_a_processor_that_does_not_answer_is_a_503_and_erasure_waits(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", partitions=2, fsync=False)
    backends = open_backends(settings, migrate_catalog=True)
    with processing(settings):  # applies one user's event, then stops
        backends.bus.publish(EVENTS, [("user123", encode_event(event("user123", amount=5)))])
        wait_until(lambda: backends.store.profile("user123") is not None)
    app = create_app(settings, backends, processor_timeout=0.3)
    with serving(app) as url, httpx.Client(base_url=url) as client:
        preview = client.post("/api/segments/preview", json={"rules": HIGH_VALUE})
        assert assert_error(preview, 503)["code"] == "processor_unavailable"
        assert preview.headers["retry-after"] == "2"
        erased = client.delete("/api/users/user123")
        assert (erased.status_code, erased.json()) == (202, {"status": "scheduled"})
    with (
        processing(settings),
        serving(create_app(settings, backends)) as url,
        httpx.Client(base_url=url) as client,
    ):  # the erasure was in the log all along: a processor applies it
        wait_until(lambda: client.get("/api/status").json()["processor"]["lag"] == 0)
        assert_error(client.get("/api/users/user123"), 404)
    backends.close()


def test_scopes_guard_reads_and_writes(tmp_path: Path) -> None:
    keys = [ApiKey(key="reader", scopes=frozenset({"read"})), ApiKey(key="boss")]
    settings = Settings(data_dir=tmp_path / "data", fsync=False, api_keys=keys)
    backends = open_backends(settings, migrate_catalog=True)
    body = {"name": "S", "type": "STATIC"}
    with serving(create_app(settings, backends)) as url, httpx.Client(base_url=url) as client:
        assert_error(client.get("/api/segments"), 401)
        assert_error(client.get("/api/segments", headers={"X-API-Key": "wrong"}), 401)
        assert client.get("/api/segments", headers={"X-API-Key": "reader"}).status_code == 200
        assert_error(client.post("/api/segments", json=body, headers={"X-API-Key": "reader"}), 403)
        created = client.post("/api/segments", json=body, headers={"Authorization": "Bearer boss"})
        assert created.status_code == 201
        assert client.get("/health").status_code == 200
    backends.close()
