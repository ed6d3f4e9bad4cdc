"""Event Ingestion API figures over real HTTP: single events per second, batched events per second.

Run: ``python bench/ingestion.py [--seconds S] [--connections C] [--batch-connections B]
[--client auto|wrk|python] [--no-fsync] [--dir D]``.

The ingestion app runs in a child process as ``audience-manager ingestion`` runs it:
uvicorn, one worker (uvloop and httptools), on a loopback port, over a fresh data
directory under ``D`` (the system's temporary directory unless given; it should be on the
disk being measured). Then:

1. single events: ``C`` keep-alive connections (64 by default) each POST the seed's event
   to ``/api/events`` back to back for ``S`` seconds, with ``wrk`` when it is installed
   (it needs far less CPU than any Python client), else with a raw-socket asyncio client;
2. batches: ``B`` connections POST ``{"events": [...]}`` of 1,000 events back to back.

Every 202 means durably in the log (fsync on, unless ``--no-fsync``). It prints
requests/s, events/s, latency percentiles, the server's CPU time per event, the average
number of records each log write carried (group commit), and checks that the log holds
exactly the events accepted. Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SEED = {"eventType": "purchase", "properties": {"amount": 1500, "category": "electronics"}}
USERS = 10_000
WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"userId":"user%d","eventType":"purchase","properties":{"amount":%d,"category":"electronics"}}',
    counter % USERS, counter % 2000)
  return wrk.format("POST", "/api/events", {["Content-Type"] = "application/json"}, body)
end
""".replace("USERS", str(USERS))


@dataclass
class Phase:
    """What one load phase measured."""

    requests: int = 0
    events: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    percentiles: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    publishes: float = 0.0
    published: float = 0.0

    def percentile(self, p: float) -> float:
        if f"p{p:g}" in self.percentiles:
            return self.percentiles[f"p{p:g}"]
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0


def serve(port: int, data_dir: Path, fsync: bool) -> None:
    """The child process: the ingestion app under uvicorn, as the CLI runs it."""
    import uvicorn

    from audience_manager.api.ingestion.app import create_app
    from audience_manager.config import Settings

    settings = Settings(data_dir=data_dir, ingestion_port=port, fsync=fsync, log_level="WARNING")
    uvicorn.run(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publish_totals(url: str) -> tuple[float, float]:
    """Publish calls and records they carried so far, from the app's metrics."""
    text = httpx.get(url + "/metrics").text
    count = re.search(r"^am_ingestion_publish_records_count (\S+)$", text, re.M)
    total = re.search(r"^am_ingestion_publish_records_sum (\S+)$", text, re.M)
    return (float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0)


def single_request(i: int) -> bytes:
    body = json.dumps({"userId": f"user{i % USERS}", **SEED}, separators=(",", ":")).encode()
    head = b"POST /api/events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def batch_request(start: int, size: int) -> bytes:
    events = [{"userId": f"user{(start + i) % USERS}", **SEED} for i in range(size)]
    body = json.dumps({"events": events}, separators=(",", ":")).encode()
    head = b"POST /api/events/batch HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def drive(port: int, requests: list[bytes], per: int, conns: int, secs: float) -> Phase:
    """``conns`` keep-alive connections sending ``requests`` round robin for ``secs``."""
    phase = Phase()
    deadline = time.perf_counter() + secs

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = offset
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            writer.write(requests[n % len(requests)])
            n += conns
            head = await reader.readuntil(b"\r\n\r\n")
            start = head.lower().index(b"content-length:") + 15
            await reader.readexactly(int(head[start : head.index(b"\r", start)]))
            phase.latencies_ms.append((time.perf_counter() - sent) * 1000)
            phase.requests += 1
            if head[9:12] == b"202":
                phase.events += per
            else:
                phase.errors += 1
        writer.close()
        await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(conns)))
    phase.seconds = time.perf_counter() - started
    return phase


def run_wrk(url: str, conns: int, secs: float) -> Phase:
    """Single events with wrk; its report parsed into a phase."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        command = ["wrk", "-t1", f"-c{conns}", f"-d{secs:g}s", "--latency", "-s", script.name]
        out = subprocess.run(
            [*command, url + "/api/events"], capture_output=True, text=True, check=True
        ).stdout
    finally:
        os.unlink(script.name)
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(m?s)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    phase = Phase(requests=requests, errors=int(errors.group(1)) if errors else 0, seconds=secs)
    phase.events = requests - phase.errors
    if socket_errors:
        print(f"  wrk socket errors: {socket_errors.group(1)}")
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    for p, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)$", out, re.M):
        phase.percentiles[f"p{p}"] = float(value) * units[unit]
    return phase


def measure(pid: int, url: str, load: object) -> Phase:
    """Run ``load`` (a callable returning a phase); add the server's CPU and group sizes."""
    cpu = cpu_seconds(pid)
    calls, records = publish_totals(url)
    phase: Phase = load()  # type: ignore[operator]
    phase.cpu_seconds = cpu_seconds(pid) - cpu
    after_calls, after_records = publish_totals(url)
    phase.publishes, phase.published = after_calls - calls, after_records - records
    return phase


def report(name: str, phase: Phase) -> None:
    rate = phase.events / phase.seconds
    cpu_us = phase.cpu_seconds / max(phase.events, 1) * 1e6
    group = phase.published / phase.publishes if phase.publishes else 0.0
    print(
        f"{name}: {rate:,.0f} events/s ({phase.requests / phase.seconds:,.0f} requests/s, "
        f"{phase.errors} not accepted)\n"
        f"  latency p50 {phase.percentile(50):.1f} ms, p99 {phase.percentile(99):.1f} ms; "
        f"server CPU {cpu_us:.1f} µs/event ({phase.cpu_seconds / phase.seconds:.2f} cores); "
        f"{group:,.1f} records per log write"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.data_dir, not args.no_fsync)
        return
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-ingestion-") as tmp:
        command = [sys.executable, __file__, "--serve", str(port), "--data-dir", f"{tmp}/data"]
        server = subprocess.Popen([*command, *(["--no-fsync"] if args.no_fsync else [])])
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                time.sleep(0.1)
            print(
                f"ingestion bench: {os.cpu_count()} CPUs, load average "
                f"{os.getloadavg()[0]:.1f} at start, fsync {'off' if args.no_fsync else 'on'}, "
                f"log in {tmp}"
            )
            singles = [single_request(i) for i in range(USERS)]
            asyncio.run(drive(port, singles, 1, args.connections, 1.0))  # warm up

            def single_load() -> Phase:
                if use_wrk:
                    return run_wrk(url, args.connections, args.seconds)
                return asyncio.run(drive(port, singles, 1, args.connections, args.seconds))

            single = measure(server.pid, url, single_load)
            client = "wrk" if use_wrk else "python asyncio client"
            report(f"single events, {args.connections} connections ({client})", single)

            batches = [batch_request(i * 1000, 1000) for i in range(20)]
            conns = args.batch_connections
            batch = measure(
                server.pid,
                url,
                lambda: asyncio.run(drive(port, batches, 1000, conns, args.seconds)),
            )
            report(f"batches of 1,000 events, {conns} connections", batch)

            lag = httpx.get(url + "/api/status").json()["processor"]["lag"]
            print(f"log check: {lag:,} events in the log (no processor runs), ", end="")
            print("every accepted event included" if lag >= single.events + batch.events else "")
            single_rate = single.events / single.seconds
            batch_rate = batch.events / batch.seconds
            print(
                f"targets: single >= 10,000/s {'met' if single_rate >= 10_000 else 'MISSED'} "
                f"({single_rate:,.0f}); batched >= 100,000/s "
                f"{'met' if batch_rate >= 100_000 else 'MISSED'} ({batch_rate:,.0f})"
            )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
