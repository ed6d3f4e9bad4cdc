"""The migrations build exactly the schema the models describe."""

import io
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select

from audience_manager.catalog import create_catalog_engine, migrate, sqlite_url
from audience_manager.catalog.migrate import MIGRATIONS, alembic_config
from audience_manager.catalog.models import Base, CatalogRevision


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert context.get_current_revision() == ScriptDirectory(MIGRATIONS).get_current_head()


def test_live_names_are_unique_through_partial_indexes(engine: Engine) -> None:
    for table in ("segments", "attributes"):
        (index,) = [
            index
            for index in inspect(engine).get_indexes(table)
            if index["name"] == f"uq_{table}_live_name"
        ]
        assert index["unique"]
        assert str(index["dialect_options"]["sqlite_where"]) == "deleted_at IS NULL"


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    url = sqlite_url(str(tmp_path / "catalog.db"))
    migrate(url)
    migrate(url)
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(CatalogRevision.id, CatalogRevision.revision))
            assert [tuple(row) for row in rows] == [(1, 0)]
    finally:
        engine.dispose()


def test_migrations_render_for_postgresql() -> None:
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", "postgresql://catalog@localhost/catalog")
    output = io.StringIO()
    config.output_buffer = output
    command.upgrade(config, "head", sql=True)
    sql = output.getvalue()
    assert (
        "CREATE UNIQUE INDEX uq_segments_live_name ON segments (name) WHERE deleted_at IS NULL"
        in sql
    )
    assert "TIMESTAMP WITH TIME ZONE" in sql
    assert "INSERT INTO catalog_revision (id, revision) VALUES (1, 0)" in sql
    assert "PERFORM pg_notify('am_catalog', CAST(NEW.revision AS text))" in sql
    assert "CREATE TRIGGER catalog_revision_notify AFTER UPDATE OF revision" in sql
