"""Engines for the catalog database: a SQLite file (embedded) or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "POOL_TIMEOUT_SECONDS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_catalog_engine",
    "sqlite_url",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another process's write to finish."""

CONNECT_TIMEOUT_SECONDS = 3
"""How long a PostgreSQL connection attempt may take before the catalog is unavailable."""

POOL_TIMEOUT_SECONDS = 5.0
"""How long a request waits for a free pooled connection before the catalog is unavailable."""


def sqlite_url(path: str) -> str:
    """The SQLAlchemy URL of the SQLite catalog file at ``path``."""
    return f"sqlite+pysqlite:///{path}"


def create_catalog_engine(url: str, **options: Any) -> Engine:
    """An engine for the catalog at ``url``; ``options`` go to ``create_engine``.

    Pooled connections are tested before use, so that those a database restart broke are
    replaced. PostgreSQL connections give up after :data:`CONNECT_TIMEOUT_SECONDS` and
    requests wait at most :data:`POOL_TIMEOUT_SECONDS` for one: during an outage calls fail
    fast (``CatalogUnavailable``) instead of hanging. SQLite connections enforce foreign keys,
    wait for each other's writes, and use the write-ahead log so that readers in other
    processes never block a writer.
    """
    options.setdefault("pool_pre_ping", True)
    if make_url(url).get_backend_name() == "postgresql":
        options.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        options["connect_args"] = connect_args | options.get("connect_args", {})
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()
