"""A PostgreSQL outage: the API answers 503 meanwhile, and everything resumes after it
without a restart of the app or the processor."""

import time
from pathlib import Path

import catalog_races
import httpx
from processing import processor_thread, seconds_until
from serve_process import serving
from services.postgres import PostgresServer, database

from audience_manager.api.management import create_app
from audience_manager.catalog import migrate
from audience_manager.config import Settings

SEED = catalog_races.SEED
UNAVAILABLE = {
    "error": {
        "code": "unavailable",
        "message": "a backend is unavailable; retry shortly",
        "details": [],
    }
}


def create(client: httpx.Client, name: str) -> str:
    response = client.post("/api/segments", json={"name": name, "rules": SEED})
    assert response.status_code == 201, response.text
    segment_id: str = response.json()["id"]
    return segment_id


def active(client: httpx.Client, segment_id: str) -> bool:
    response = client.get(f"/api/segments/{segment_id}")
    return response.status_code == 200 and response.json()["status"] == "ACTIVE"


#: How long PostgreSQL stays down (seconds).
OUTAGE = 10.0


def test_an_outage_answers_503_and_nothing_needs_a_restart_after_it(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    with database(own_postgres.url) as url:
        migrate(url)
        settings = Settings(data_dir=tmp_path, catalog_url=url)
        with (
            serving(create_app(settings)) as base,
            httpx.Client(base_url=base, timeout=10) as client,
            processor_thread(settings),
        ):
            before = create(client, "before")
            seconds_until(lambda: active(client, before))

            own_postgres.stop()
            down = time.monotonic()
            for method, path in [
                ("GET", "/api/segments"),
                ("GET", f"/api/segments/{before}"),
                ("POST", "/api/segments"),
            ]:
                started = time.monotonic()
                response = client.request(method, path, json={"name": "during", "rules": SEED})
                assert time.monotonic() - started < 1.0, "requests fail fast"
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "2"
                assert response.json() == UNAVAILABLE
            ready = client.get("/health/ready")
            assert (ready.status_code, ready.json()["checks"]["catalog"]) == (503, "DOWN")
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))  # down for a while
            assert client.get("/api/segments").status_code == 503  # still down, still 503

            own_postgres.start()
            restarted = time.monotonic()
            after = create(client, "after")
            seconds_until(lambda: active(client, after), timeout=10)
            since_restart = time.monotonic() - restarted
            assert client.get("/health/ready").status_code == 200
            assert [s["name"] for s in client.get("/api/segments").json()["items"]] == [
                "before",
                "after",
            ]
    print(f"restart to the new segment ACTIVE: {since_restart * 1000:.0f} ms")
    assert since_restart < 1.0
