"""Settings: one typed root, read from ``AM_*`` environment variables and validated at start.

Nothing is built at import time: ``Settings()`` is created by the CLI and passed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApiKey", "Settings"]

Scope = Literal["ingest", "read", "admin"]


class ApiKey(BaseSettings):
    """An API key and the scopes it grants."""

    key: SecretStr
    scopes: frozenset[Scope] = frozenset({"ingest", "read", "admin"})


class Settings(BaseSettings):
    """Everything a process needs to start; defaults run the embedded platform."""

    model_config = SettingsConfigDict(env_prefix="AM_", env_nested_delimiter="__", frozen=True)

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
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("log level must be DEBUG, INFO, WARNING or ERROR")
        return level

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
        return self.data_dir / "state" / "snapshots"

    @property
    def auth_required(self) -> bool:
        """Keys are required unless none are configured and we listen on loopback only."""
        return bool(self.api_keys) or self.host not in ("127.0.0.1", "localhost", "::1")
