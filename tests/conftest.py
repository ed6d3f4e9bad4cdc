"""Make the shared test modules (``reference``, ``strategies``, ``services``) importable from
any test, and offer the real servers' fixtures (``services.postgres``, ``services.valkey``,
``services.kafka``, ``services.tls``) to every test."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = [
    "services.postgres",
    "services.valkey",
    "services.valkey_cluster",
    "services.kafka",
    "services.tls",
]
