"""An S3-compatible object store for tests: moto's server, in a process of its own.

tansu keeps a broker's data in an object store (``s3://bucket/``) and nothing on its own
disk, so a broker started again on the same bucket has every record and committed offset
of the one before; the tests that restart a broker use one. The server keeps objects in
its memory: it outlives the brokers, not itself. Without ``moto`` (and Flask, which its
server needs) the tests that need it are skipped, unless ``AM_REQUIRE_SERVICES=1`` (as in
CI), where they fail instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from services import unavailable
from services.kafka import free_port

__all__ = ["ObjectStore", "running_s3"]

_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ObjectStore:
    """A running S3-compatible server at ``endpoint`` and a bucket of its own on it."""

    endpoint: str
    bucket: str

    def environment(self) -> dict[str, str]:
        """What an S3 client (tansu's among them) reads to reach the bucket's server."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }


@contextlib.contextmanager
def running_s3() -> Iterator[ObjectStore]:
    """A new server on a free loopback port with one empty bucket, killed on exit."""
    for module in ("moto", "flask", "flask_cors"):
        if importlib.util.find_spec(module) is None:
            unavailable("an S3 server", f"the {module} package (moto's S3 server) is missing")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="am-test-s3-") as directory:
        log_path = Path(directory) / "s3.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            bucket = f"am-{secrets.token_hex(6)}"
            deadline = time.monotonic() + _START_TIMEOUT
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.put(f"{endpoint}/{bucket}", timeout=2).status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    output = log_path.read_text(errors="replace")[-2000:]
                    unavailable("an S3 server", f"moto's S3 server did not start:\n{output}")
                time.sleep(0.1)
            yield ObjectStore(endpoint, bucket)
        finally:
            process.kill()
            process.wait()
