"""The state-store port and its backends."""

from audience_manager.store.base import (
    ChangeRecord,
    JournalEntry,
    ProfileWrite,
    StateCommit,
    StateStore,
    StoreError,
    StoreUnavailable,
)
from audience_manager.store.embedded import EmbeddedStateStore

__all__ = [
    "ChangeRecord",
    "EmbeddedStateStore",
    "JournalEntry",
    "ProfileWrite",
    "StateCommit",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
]
