"""Throwaway PostgreSQL servers, and a fresh database per test.

A server is started from the PostgreSQL programs on this machine (``initdb``, ``pg_ctl``)
and needs the ``psycopg`` driver. ``AM_TEST_POSTGRES_URL`` (a server URL without a database,
``postgresql+psycopg://user@host:port``, whose user may create databases) names an external
server for the session instead. Without either the tests are skipped, unless
``AM_REQUIRE_SERVICES=1`` (as in CI), where they fail instead.

Fixtures: ``postgres_url`` (the session's server), ``postgres_database`` (a new empty database
on it) and ``own_postgres`` (a server of the test's own, to stop and start).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import NullPool, create_engine, text

from services import unavailable

__all__ = ["PostgresServer", "database", "own_postgres", "postgres_database", "postgres_url"]


def _program(name: str) -> str:
    found = shutil.which(name) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default=None)
    if found is None:
        unavailable("PostgreSQL", f"the PostgreSQL server program {name} is not installed")
    assert found is not None
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: run it as ``postgres`` then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        unavailable(
            "PostgreSQL", "running as root and there is no 'postgres' user to run the server"
        )
    return "postgres"


@dataclass
class PostgresServer:
    """A server with its own data directory and loopback port; stop and start it at will."""

    directory: Path
    port: int
    user: str | None
    running: bool = False

    @property
    def url(self) -> str:
        """The server's URL, without a database name."""
        return f"postgresql+psycopg://catalog@127.0.0.1:{self.port}"

    @property
    def data(self) -> str:
        return str(self.directory / "data")

    def initialise(self) -> None:
        """Create the data directory: a ``catalog`` superuser, trusted on loopback."""
        initdb = _program("initdb")
        self._run(
            initdb, "-D", self.data, "-U", "catalog", "--auth=trust", "-E", "UTF8", "--no-sync"
        )

    def start(self) -> None:
        """Start the server (on the same directory and port as before) and wait for it."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "server.log")
        self._run(_program("pg_ctl"), "-D", self.data, "-l", log, "-o", options, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """Stop the server at once: sessions are ended, as at a real outage."""
        self._run(_program("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")
        self.running = False

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.user)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A new server in a temporary directory, removed when the block ends."""
    if importlib.util.find_spec("psycopg") is None:
        unavailable("PostgreSQL", "the psycopg driver is not installed")
    user = _server_user()
    directory = Path(tempfile.mkdtemp(prefix="am-test-pg-"))
    try:
        if user is not None:
            shutil.chown(directory, user)
        server = PostgresServer(directory, _free_port(), user)
        server.initialise()
        server.start()
        try:
            yield server
        finally:
            if server.running:
                server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def database(server_url: str) -> Iterator[str]:
    """A new empty database on the server at ``server_url``; its URL, dropped afterwards."""
    name = f"am_test_{secrets.token_hex(6)}"
    # No pool: a connection kept from before a restart of the server would be dead.
    admin = create_engine(
        f"{server_url}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        yield f"{server_url}/{name}"
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of the session's server (no database name)."""
    external = os.environ.get("AM_TEST_POSTGRES_URL")
    if external:
        yield external.rstrip("/")
        return
    with running_postgres() as server:
        yield server.url


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A new empty database on the session's server, dropped after the test."""
    with database(postgres_url) as url:
        yield url


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own: it may stop and start it (never an external one)."""
    with running_postgres() as server:
        yield server
