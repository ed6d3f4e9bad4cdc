"""Start ``audience-manager serve`` as the user would, and talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run an ASGI ``app`` with uvicorn in a thread on a free loopback port; yield its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="none", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running ``serve`` process group on loopback ports."""

    data_dir: Path
    management_port: int = field(default_factory=free_port)
    ingestion_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Frequent snapshots in tests, so restarts replay from a snapshot as well as the journal.
    env: dict[str, str] = field(default_factory=lambda: {"AM_SNAPSHOT_SECONDS": "2"})

    @property
    def management(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def ingestion(self) -> str:
        return f"http://127.0.0.1:{self.ingestion_port}"

    def start(self, timeout: float = 60.0) -> None:
        command = [
            sys.executable,
            "-m",
            "audience_manager",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--management-port",
            str(self.management_port),
            "--ingestion-port",
            str(self.ingestion_port),
        ]
        env = {**os.environ, **self.env}
        # The child keeps its own copy of the descriptor.
        with (self.data_dir.parent / f"{self.data_dir.name}-serve.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        deadline = time.monotonic() + timeout
        for base in (self.management, self.ingestion):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.process.returncode}")
                try:
                    if httpx.get(base + "/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{base} did not become ready")
                time.sleep(0.1)

    def kill(self) -> None:
        """``kill -9`` every process of the group: no chance to clean up."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def wait_applied(self, timeout: float = 60.0) -> None:
        """Until the processor has applied everything accepted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = httpx.get(self.management + "/api/status", timeout=5).json()
            if status["processor"]["lag"] == 0:
                return
            time.sleep(0.05)
        raise TimeoutError("the processor did not catch up")

    def wait_active(self, segment_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            segment: dict[str, Any] = httpx.get(
                f"{self.management}/api/segments/{segment_id}", timeout=5
            ).json()
            if segment["status"] == "ACTIVE":
                return segment
            time.sleep(0.05)
        raise TimeoutError(f"segment {segment_id} did not become ACTIVE")
