"""Engines for the catalog database: a SQLite file (embedded) or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "create_catalog_engine", "sqlite_url"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another process's write to finish."""


def sqlite_url(path: str) -> str:
    """The SQLAlchemy URL of the SQLite catalog file at ``path``."""
    return f"sqlite+pysqlite:///{path}"


def create_catalog_engine(url: str, **options: Any) -> Engine:
    """An engine for the catalog at ``url``; ``options`` go to ``create_engine``.

    SQLite connections enforce foreign keys, wait for each other's writes, and use the
    write-ahead log so that readers in other processes never block a writer.
    """
    options.setdefault("pool_pre_ping", True)
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
