"""The catalog on the session's PostgreSQL server: a fresh, migrated database per test."""

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from audience_manager.catalog import CatalogService, create_catalog_engine, migrate


@pytest.fixture
def catalog_url(postgres_database: str) -> str:
    migrate(postgres_database)
    return postgres_database


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    engine = create_catalog_engine(catalog_url)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(engine: Engine) -> CatalogService:
    return CatalogService(engine)
