"""Real servers for tests: PostgreSQL, Valkey and a Kafka-protocol broker, started here or
named by the environment."""

import os
from typing import NoReturn

import pytest


def unavailable(service: str, reason: str) -> NoReturn:
    """Skip the test because ``service`` cannot run, or fail it where services are required."""
    if os.environ.get("AM_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{service} is required: {reason}")
    pytest.skip(reason)
