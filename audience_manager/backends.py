"""Build the backends a process needs from settings: bus, state store, catalog."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from audience_manager.bus.base import EventBus
from audience_manager.bus.embedded import EmbeddedEventBus
from audience_manager.catalog.database import create_catalog_engine
from audience_manager.catalog.migrate import migrate
from audience_manager.catalog.service import CatalogService
from audience_manager.config import Settings
from audience_manager.store import EmbeddedStateStore, StateStore

__all__ = ["Backends", "open_backends"]


@dataclass
class Backends:
    """The ports of one process, opened from settings."""

    bus: EventBus
    store: StateStore
    catalog: CatalogService
    catalog_engine: Engine

    def close(self) -> None:
        self.bus.close()
        self.store.close()
        self.catalog_engine.dispose()


def open_backends(settings: Settings, *, migrate_catalog: bool = False) -> Backends:
    """Open the configured backends (the embedded ones by default)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate_catalog:
        migrate(settings.catalog)
    bus = EmbeddedEventBus(
        settings.log_dir,
        partitions=settings.partitions,
        fsync=settings.fsync,
        retention_ms=int(settings.retention_days * 86_400_000),
    )
    store = EmbeddedStateStore(settings.state_dir)
    engine = create_catalog_engine(settings.catalog)
    return Backends(bus, store, CatalogService(engine), engine)
