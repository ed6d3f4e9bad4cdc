"""Bring a catalog database up to the newest schema (``alembic upgrade head``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, text

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "alembic_config", "migrate"]

MIGRATIONS = Path(__file__).with_name("migrations")
"""The Alembic environment of the catalog (``env.py``, ``versions/``)."""

MIGRATION_LOCK = 0x616D_6361_7461_6C67  # "amcatalg"
"""The PostgreSQL advisory lock a migration holds until it commits."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the catalog's migrations, with no ``alembic.ini``.

    With ``connection`` the migrations run on it (inside its transaction).
    """
    config = Config()
    # Config values go through configparser interpolation: a literal % must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def migrate(url: str | Engine) -> None:
    """Upgrade the catalog database at ``url`` (or behind an engine) to the newest schema.

    Safe to run on every start: an up-to-date database is left as it is. Processes that
    start together on PostgreSQL take turns; on SQLite the first write does the same.
    """
    engine = create_engine(url) if isinstance(url, str) else url
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            command.upgrade(alembic_config(connection), "head")
    finally:
        if isinstance(url, str):
            engine.dispose()
