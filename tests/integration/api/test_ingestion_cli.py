"""``audience-manager ingestion``: the CLI runs the app, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from audience_manager.backends import open_backends
from audience_manager.config import Settings

SEED_EVENT = {
    "userId": "user123",
    "eventType": "purchase",
    "properties": {"amount": 1500, "category": "electronics"},
}


def test_the_cli_runs_the_ingestion_api(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    data_dir = tmp_path / "cli"
    command = [sys.executable, "-m", "audience_manager", "ingestion"]
    command += ["--data-dir", str(data_dir), "--ingestion-port", str(port)]
    log_path = tmp_path / "ingestion.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the ingestion API did not become ready"
            time.sleep(0.1)
        assert httpx.post(url + "/api/events", json=SEED_EVENT).status_code == 202
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log_path.read_text()
    backends = open_backends(Settings(data_dir=data_dir))
    try:
        assert sum(backends.bus.end_offsets("events").values()) == 1
    finally:
        backends.close()
