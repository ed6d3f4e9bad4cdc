"""The state-store port and its backends.

``base`` defines the port; ``embedded`` keeps state in a local SQLite file (exported here);
``redis`` keeps it in Redis or Valkey and is imported from its module, so that the embedded
platform never loads the client library.
"""

from audience_manager.store.base import (
    ChangeRecord,
    Fenced,
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
    "Fenced",
    "JournalEntry",
    "ProfileWrite",
    "StateCommit",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
]
