"""A fresh embedded state store and migrated SQLite catalog per test, and a way to write
membership the way the processor does (rows, sizes and change-log lines together)."""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from audience_manager.catalog import CatalogService, create_catalog_engine, migrate, sqlite_url
from audience_manager.store import ChangeRecord, EmbeddedStateStore, ProfileWrite, StateCommit


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStateStore]:
    state = EmbeddedStateStore(tmp_path / "state")
    yield state
    state.close()


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[CatalogService]:
    url = sqlite_url(str(tmp_path / "catalog.db"))
    migrate(url)
    engine = create_catalog_engine(url)
    yield CatalogService(engine)
    engine.dispose()


@dataclass
class Writer:
    """Commits like the processor: a profile for every new user, then membership changes."""

    store: EmbeddedStateStore
    users: set[int] = field(default_factory=set)

    def commit(
        self,
        enters: Mapping[str, Iterable[int]] | None = None,
        exits: Mapping[str, Iterable[int]] | None = None,
        erase: Iterable[int] = (),
        drop: Iterable[str] = (),
        profiles: Iterable[int] = (),
    ) -> None:
        entered = {s: list(d) for s, d in (enters or {}).items()}
        exited = {s: list(d) for s, d in (exits or {}).items()}
        erased = list(erase)
        new = {d for dense in entered.values() for d in dense} | set(profiles)
        new -= self.users
        self.users |= new
        self.users -= set(erased)
        writes = [ProfileWrite(d, f"u{d}", b"{}") for d in sorted(new)]
        writes += [ProfileWrite(d, f"u{d}", None) for d in erased]
        changes = [
            ChangeRecord(s, f"u{d}", d, kind, 0)
            for kind, table in (("enter", entered), ("exit", exited))
            for s, dense in table.items()
            for d in dense
        ]
        changes += [ChangeRecord("", f"u{d}", d, "erase", 0) for d in erased]
        changes += [ChangeRecord(s, "", -1, "drop", 0) for s in drop]
        commit = StateCommit({}, 0, writes, entered, exited, dropped=list(drop), changes=changes)
        self.store.commit(commit)


@pytest.fixture
def writer(store: EmbeddedStateStore) -> Writer:
    return Writer(store)
