"""The state-store port and its backends."""

from audience_manager.store.base import (
    JournalEntry,
    ProfileWrite,
    StateCommit,
    StateStore,
    StoreError,
    StoreUnavailable,
)
from audience_manager.store.embedded import EmbeddedStateStore

__all__ = [
    "EmbeddedStateStore",
    "JournalEntry",
    "ProfileWrite",
    "StateCommit",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
]
