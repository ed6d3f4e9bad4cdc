"""A freshly migrated SQLite catalog file per test."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from audience_manager.catalog import CatalogService, create_catalog_engine, migrate, sqlite_url


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    url = sqlite_url(str(tmp_path / "catalog.db"))
    migrate(url)
    return url


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    engine = create_catalog_engine(catalog_url)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(engine: Engine) -> CatalogService:
    return CatalogService(engine)
