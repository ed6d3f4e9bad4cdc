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

__all__ = ["Backends", "kafka_client_config", "open_backends", "open_relay_ports"]


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
    bus = _open_bus(settings)
    store = _open_store(settings)
    engine = create_catalog_engine(settings.catalog)
    return Backends(bus, store, CatalogService(engine), engine)


def open_relay_ports(settings: Settings) -> tuple[EventBus, StateStore]:
    """The bus and the store a change relay process needs."""
    return _open_bus(settings), _open_store(settings)


def kafka_client_config(settings: Settings) -> dict[str, str]:
    """librdkafka settings for the security that ``settings`` configure."""
    config: dict[str, str] = {"security.protocol": settings.bus_protocol}
    if settings.bus_sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.bus_sasl_mechanism
    if settings.bus_sasl_username is not None:
        config["sasl.username"] = settings.bus_sasl_username
    if settings.bus_sasl_password is not None:
        config["sasl.password"] = settings.bus_sasl_password.get_secret_value()
    if settings.bus_ssl_ca_location is not None:
        config["ssl.ca.location"] = str(settings.bus_ssl_ca_location)
    return config


def _open_store(settings: Settings) -> StateStore:
    """Redis or Valkey when ``state_url`` is set, else SQLite in the data directory."""
    if settings.state_url is None:
        return EmbeddedStateStore(settings.state_dir)
    from audience_manager.store.redis import RedisStateStore  # only Redis deployments load it

    return RedisStateStore(settings.state_url.get_secret_value(), prefix=settings.state_prefix)


def _open_bus(settings: Settings) -> EventBus:
    """Kafka when ``bus_url`` is set, else the embedded log in the data directory."""
    if settings.bus_bootstrap is None:
        return EmbeddedEventBus(
            settings.log_dir,
            partitions=settings.partitions,
            fsync=settings.fsync,
            retention_ms=int(settings.retention_days * 86_400_000),
        )
    from audience_manager.bus.kafka import KafkaEventBus  # only Kafka deployments load it

    return KafkaEventBus(
        settings.bus_bootstrap,
        partitions=settings.partitions,
        replication=settings.bus_replication,
        client_config=kafka_client_config(settings),
        consumer_config={"session.timeout.ms": int(settings.bus_session_timeout * 1000)},
    )
