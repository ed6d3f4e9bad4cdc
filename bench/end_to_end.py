"""The whole platform under load: ``serve`` started here, driven over HTTP on loopback.

Prints batched events/s from HTTP to updated membership (until the processor's lag is 0),
and p50/p99 latency from a 202 to the membership being visible through the API, measured
while a background load runs at about half the batched rate.

    .venv/bin/python bench/end_to_end.py [--events 300000] [--batch 1000] [--probes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serve_process import Served

T0 = 1_767_225_600_000


def batches(total: int, size: int, users: int) -> list[bytes]:
    """NDJSON bodies of purchase events spread over ``users`` users."""
    out = []
    for start in range(0, total, size):
        lines = [
            b'{"userId":"u%d","eventType":"purchase","properties":{"amount":%d}}'
            % ((start + i) * 7919 % users, 1 + (start + i) % 300)
            for i in range(min(size, total - start))
        ]
        out.append(b"\n".join(lines))
    return out


async def send_all(url: str, bodies: list[bytes], concurrency: int) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"content-type": "application/x-ndjson"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post("/api/events/batch", content=body, headers=headers)
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def throughput(served: Served, total: int, size: int) -> float:
    bodies = batches(total, size, users=100_000)
    started = time.perf_counter()
    asyncio.run(send_all(served.ingestion, bodies, concurrency=4))
    sent = time.perf_counter() - started
    served.wait_applied(timeout=600)
    elapsed = time.perf_counter() - started
    print(f"HTTP accepted {total:,} events in {sent:.2f} s = {total / sent:,.0f} events/s")
    print(
        f"batched events/s from HTTP to updated membership: {total / elapsed:,.0f} "
        f"({total:,} events in batches of {size:,}, lag 0 after {elapsed:.2f} s)"
    )
    return total / elapsed


def latency(served: Served, segment_id: str, probes: int, rate: float) -> None:
    """Latency 202 → member, with background load at ``rate`` events/s."""
    stop = threading.Event()

    def background() -> None:
        body = batches(1000, 1000, users=50_000)[0]
        headers = {"content-type": "application/x-ndjson"}
        with httpx.Client(base_url=served.ingestion, timeout=60) as client:
            while not stop.is_set():
                began = time.perf_counter()
                client.post("/api/events/batch", content=body, headers=headers)
                time.sleep(max(0.0, 1000 / rate - (time.perf_counter() - began)))

    loader = threading.Thread(target=background, daemon=True)
    loader.start()
    samples = []
    with (
        httpx.Client(base_url=served.ingestion, timeout=10) as ingest,
        httpx.Client(base_url=served.management, timeout=10) as manage,
    ):
        for probe in range(probes):
            user = f"probe-{probe}"
            event = {"userId": user, "eventType": "purchase", "properties": {"amount": 5000}}
            response = ingest.post("/api/events", json=event)
            accepted = time.perf_counter()
            assert response.status_code == 202
            while True:
                listed = manage.get(f"/api/users/{user}/segments")
                if listed.status_code == 200 and any(
                    s["id"] == segment_id for s in listed.json()["segments"]
                ):
                    break
                time.sleep(0.001)
            samples.append((time.perf_counter() - accepted) * 1000)
    stop.set()
    loader.join()
    samples.sort()
    p99 = samples[max(0, int(len(samples) * 0.99) - 1)]
    print(
        f"202 → member visible, {probes} probes under {rate:,.0f} events/s background: "
        f"p50 {statistics.median(samples):.1f} ms, p99 {p99:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        served = Served(Path(directory) / "data", env={})
        served.start()
        try:
            created = httpx.post(
                served.management + "/api/segments",
                json={
                    "name": "High Value Users",
                    "rules": {
                        "conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]
                    },
                },
            ).json()
            served.wait_active(created["id"])
            rate = throughput(served, args.events, args.batch)
            latency(served, created["id"], args.probes, rate / 2)
        finally:
            served.stop()


if __name__ == "__main__":
    main()
