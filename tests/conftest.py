"""Make the shared test modules (``reference``, ``strategies``, ``services``) importable
from any test, and offer the session's service fixtures (``kafka_broker``) to every test."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from services.kafka import kafka_broker

__all__ = ["kafka_broker"]
