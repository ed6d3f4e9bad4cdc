"""Bring a catalog database up to the newest schema (``alembic upgrade head``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine

__all__ = ["MIGRATIONS", "alembic_config", "migrate"]

MIGRATIONS = Path(__file__).with_name("migrations")
"""The Alembic environment of the catalog (``env.py``, ``versions/``)."""


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

    Safe to run on every start: an up-to-date database is left as it is.
    """
    engine = create_engine(url) if isinstance(url, str) else url
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
    finally:
        if isinstance(url, str):
            engine.dispose()
