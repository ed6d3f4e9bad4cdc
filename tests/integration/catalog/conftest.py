"""A throwaway PostgreSQL server for the catalog, and a fresh database per test.

The server is started from the PostgreSQL programs on this machine (``initdb``,
``pg_ctl``) and needs the ``psycopg`` driver. Without them the tests are skipped, unless
``AM_REQUIRE_SERVICES=1`` (as in CI), where they fail instead.
"""

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
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from audience_manager.catalog import CatalogService, create_catalog_engine, migrate


def _unavailable(reason: str) -> None:
    if os.environ.get("AM_REQUIRE_SERVICES") == "1":
        pytest.fail(f"PostgreSQL is required: {reason}")
    pytest.skip(reason)


def _program(name: str) -> str | None:
    found = shutil.which(name)
    if found is not None:
        return found
    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return installed[-1] if installed else None


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
        _unavailable("running as root and there is no 'postgres' user to run the server")
    return "postgres"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a running server (no database name), for the whole session."""
    if importlib.util.find_spec("psycopg") is None:
        _unavailable("the psycopg driver is not installed")
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if initdb is None or pg_ctl is None:
        _unavailable("the PostgreSQL server programs (initdb, pg_ctl) are not installed")
    assert initdb is not None
    assert pg_ctl is not None
    user = _server_user()
    directory = Path(tempfile.mkdtemp(prefix="am-catalog-pg-"))
    if user is not None:
        shutil.chown(directory, user)
    data, port = directory / "data", _free_port()

    def run(*args: str | Path) -> None:
        subprocess.run([str(a) for a in args], check=True, capture_output=True, user=user)

    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        run(initdb, "-D", data, "-U", "catalog", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", data, "-l", directory / "server.log", "-o", options, "-w", "start")
        try:
            yield f"postgresql+psycopg://catalog@127.0.0.1:{port}"
        finally:
            run(pg_ctl, "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def catalog_url(postgres_url: str) -> Iterator[str]:
    """A new, migrated database for one test, dropped afterwards."""
    name = f"catalog_{secrets.token_hex(6)}"
    admin = create_engine(f"{postgres_url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        url = f"{postgres_url}/{name}"
        migrate(url)
        yield url
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    engine = create_catalog_engine(catalog_url)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(engine: Engine) -> CatalogService:
    return CatalogService(engine)
