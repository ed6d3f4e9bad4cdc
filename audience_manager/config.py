"""Settings: one typed root, read from ``AM_*`` environment variables and validated at start.

Nothing is built at import time: ``Settings()`` is created by the CLI and passed in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApiKey", "Settings"]

Scope = Literal["ingest", "read", "admin"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

# kafka://host:port[,host:port...] (kafka+ssl:// for TLS); hosts may be [IPv6] literals.
_BROKER = r"(?:[\w.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}"
_BUS_URL = re.compile(rf"(kafka|kafka\+ssl)://({_BROKER}(?:,{_BROKER})*)/?")
_STATE_URL = re.compile(r"(redis|rediss|valkey|valkeys)://[^/?#]+(?:/\d*)?(?:\?.*)?")


class ApiKey(BaseSettings):
    """An API key and the scopes it grants."""

    key: SecretStr
    scopes: frozenset[Scope] = frozenset({"ingest", "read", "admin"})


class Settings(BaseSettings):
    """Everything a process needs to start; defaults run the embedded platform."""

    # Errors name the setting but not its value, which may be a secret (a URL's password).
    model_config = SettingsConfigDict(
        env_prefix="AM_", env_nested_delimiter="__", frozen=True, hide_input_in_errors=True
    )

    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    management_port: int = Field(default=8081, ge=1, le=65535)
    ingestion_port: int = Field(default=8082, ge=1, le=65535)
    catalog_url: str | None = None  # default: SQLite in the data directory
    partitions: int = Field(default=8, ge=1, le=1024)
    fsync: bool = True
    retention_days: float = Field(default=7.0, gt=0)
    api_keys: list[ApiKey] = Field(default_factory=list)
    max_batch: int = Field(default=20_000, ge=1)
    snapshot_seconds: float = Field(default=60.0, gt=0)
    #: Where processors keep engine snapshots (default: in the data directory). Processors
    #: that share the partitions of a Kafka log must all see one directory (a shared volume):
    #: a processor gaining a partition starts from the snapshot its last holder wrote.
    snapshots: Path | None = None
    #: Publish membership changes to the ``membership-changes`` topic (default: with Kafka).
    publish_changes: bool | None = None
    log_level: str = "INFO"
    # The event log: Kafka when ``bus_url`` is set, else the embedded log in ``data_dir``.
    bus_url: str | None = None
    bus_security_protocol: SecurityProtocol | None = None  # default: from the URL and SASL
    bus_sasl_mechanism: SaslMechanism | None = None
    bus_sasl_username: str | None = None
    bus_sasl_password: SecretStr | None = None
    bus_ssl_ca_location: Path | None = None
    bus_replication: int | None = Field(default=None, ge=1)  # default: the broker's
    #: Seconds a processor may stay silent before its group hands its partitions to the
    #: others (Kafka's ``session.timeout.ms``; brokers accept 6 to 1800 by default).
    bus_session_timeout: float = Field(default=10.0, ge=1.0)
    # The state store: Redis or Valkey when ``state_url`` is set, else SQLite in ``data_dir``.
    state_url: SecretStr | None = None  # may hold a password
    state_prefix: str = Field(default="am", pattern=r"^[^{}]+$")

    @field_validator("bus_url")
    @classmethod
    def _kafka_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _BUS_URL.fullmatch(value)
        if match is None or any(
            not 0 < int(port.rsplit(":", 1)[1]) < 65536 for port in match[2].split(",")
        ):
            raise ValueError(
                "the bus URL must look like kafka://host:9092[,host2:9092] (or kafka+ssl://)"
            )
        return value

    @field_validator("state_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _STATE_URL.fullmatch(value.get_secret_value()) is None:
            raise ValueError(
                "the state URL must look like redis://[user:password@]host:6379[/db] "
                "(or rediss://, valkey://, valkeys://)"
            )
        return value

    @model_validator(mode="after")
    def _bus_security(self) -> Self:
        protocol = self.bus_protocol
        if self._bus_tls and protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(f"a kafka+ssl:// bus URL needs TLS, not {protocol}")
        sasl = (self.bus_sasl_mechanism, self.bus_sasl_username, self.bus_sasl_password)
        if protocol.startswith("SASL_") and None in sasl:
            raise ValueError("SASL needs bus_sasl_mechanism, bus_sasl_username, bus_sasl_password")
        if not protocol.startswith("SASL_") and sasl != (None, None, None):
            raise ValueError(f"bus_sasl_* settings need a SASL security protocol, not {protocol}")
        return self

    @property
    def _bus_tls(self) -> bool:
        return self.bus_url is not None and self.bus_url.startswith("kafka+ssl:")

    @property
    def bus_bootstrap(self) -> str | None:
        """The Kafka brokers to start from (``host:port,...``), ``None`` for the embedded log."""
        return None if self.bus_url is None else self.bus_url.split("://", 1)[1].rstrip("/")

    @property
    def bus_protocol(self) -> SecurityProtocol:
        """The Kafka security protocol: as set, else TLS for kafka+ssl:// and SASL if set."""
        if self.bus_security_protocol is not None:
            return self.bus_security_protocol
        if self.bus_sasl_mechanism is not None:
            return "SASL_SSL" if self._bus_tls else "SASL_PLAINTEXT"
        return "SSL" if self._bus_tls else "PLAINTEXT"

    @property
    def catalog(self) -> str:
        """The catalog database URL."""
        return self.catalog_url or f"sqlite:///{(self.data_dir / 'catalog.db').resolve()}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def snapshot_dir(self) -> Path:
        return self.snapshots or self.data_dir / "state" / "snapshots"

    @property
    def changes_topic_on(self) -> bool:
        """Whether the processor relays membership changes to their topic."""
        if self.publish_changes is None:
            return self.bus_url is not None
        return self.publish_changes

    @property
    def auth_required(self) -> bool:
        """Keys are required unless none are configured and we listen on loopback only."""
        return bool(self.api_keys) or self.host not in ("127.0.0.1", "localhost", "::1")
