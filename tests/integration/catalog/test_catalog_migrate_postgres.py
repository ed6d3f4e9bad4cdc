"""``audience-manager migrate`` on a live PostgreSQL catalog: rows kept, readers never blocked."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import catalog_races
import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from audience_manager.catalog import (
    AttributeCreate,
    CatalogService,
    SegmentCreate,
    create_catalog_engine,
    migrate,
)
from audience_manager.catalog.migrate import MIGRATIONS, alembic_config

SEED = catalog_races.SEED
HEAD = ScriptDirectory(MIGRATIONS).get_current_head()


@pytest.fixture
def old_engine(postgres_database: str) -> Iterator[Engine]:
    """A catalog at revision 0001, as the first release left it."""
    engine = create_catalog_engine(postgres_database)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
    yield engine
    engine.dispose()


def schema_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def notify_triggers(engine: Engine) -> int:
    query = "SELECT count(*) FROM pg_trigger WHERE tgname = 'catalog_revision_notify'"
    with engine.connect() as connection:
        return int(connection.execute(text(query)).scalar_one())


def cli_migrate(url: str, data_dir: Path) -> str:
    environment = {**os.environ, "AM_CATALOG_URL": url, "AM_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "audience_manager", "migrate"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_migrate_upgrades_a_live_catalog_with_its_rows(old_engine: Engine, tmp_path: Path) -> None:
    catalog = CatalogService(old_engine)
    created = [catalog.create_segment(SegmentCreate(name=f"s{i}", rules=SEED)) for i in range(5)]
    catalog.create_attribute(AttributeCreate(name="orders", event_type="order", aggregate="count"))
    before = catalog.changes_since(0)
    assert notify_triggers(old_engine) == 0

    with old_engine.connect() as reader:
        # A reader in the middle of a transaction over the very tables the upgrade alters.
        reader.execute(text("SELECT revision FROM catalog_revision"))
        assert reader.execute(text("SELECT count(*) FROM segments")).scalar_one() == 5
        assert "up to date" in cli_migrate(str(old_engine.url.render_as_string(False)), tmp_path)
        assert reader.execute(text("SELECT count(*) FROM segments")).scalar_one() == 5
        reader.commit()

    assert schema_revision(old_engine) == HEAD
    assert notify_triggers(old_engine) == 1
    assert catalog.changes_since(0) == before
    assert [s.id for s in catalog.list_segments().items] == [s.id for s in created]
    catalog.create_segment(SegmentCreate(name="after", rules=SEED))
    assert catalog.current_revision() == before.revision + 1


def test_migrating_twice_changes_nothing(old_engine: Engine, tmp_path: Path) -> None:
    url = old_engine.url.render_as_string(False)
    cli_migrate(url, tmp_path)
    CatalogService(old_engine).create_segment(SegmentCreate(name="kept", rules=SEED))
    cli_migrate(url, tmp_path)
    assert schema_revision(old_engine) == HEAD
    assert notify_triggers(old_engine) == 1
    assert [s.name for s in CatalogService(old_engine).list_segments().items] == ["kept"]


def test_processes_starting_together_migrate_in_turn(postgres_database: str) -> None:
    # Each process imports first and says so, then all are released at once.
    program = (
        "import sys; from audience_manager.catalog import migrate; "
        "print('ready', flush=True); sys.stdin.readline(); migrate(sys.argv[1])"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", program, postgres_database],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outcomes = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outcomes
    engine = create_catalog_engine(postgres_database)
    try:
        assert schema_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_the_notify_migration_goes_down_and_up_again(old_engine: Engine) -> None:
    with old_engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
        command.downgrade(alembic_config(connection), "0001")
    assert notify_triggers(old_engine) == 0
    migrate(old_engine)
    assert notify_triggers(old_engine) == 1
