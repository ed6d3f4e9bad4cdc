"""The test Valkey server keeps acknowledged writes across restarts (its append-only file)."""

import secrets

import pytest
import valkey
from services.valkey import ValkeyService


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill-9"])
def test_a_key_survives_a_restart(valkey_server: ValkeyService, kill: bool) -> None:
    key, value = f"am-test:{secrets.token_hex(4)}", secrets.token_bytes(8)
    with valkey.Valkey.from_url(valkey_server.url) as client:
        assert client.set(key, value)
    valkey_server.restart(kill=kill)
    with valkey.Valkey.from_url(valkey_server.url) as client:
        assert client.get(key) == value
        assert client.config_get("appendonly") == {"appendonly": "yes"}
