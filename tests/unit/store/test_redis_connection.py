"""How the Redis state store connects: options it gives the client (no server needed)."""

from __future__ import annotations

import pytest

from audience_manager.store.redis import RedisStateStore


@pytest.mark.parametrize(
    ("url", "checked"),
    [
        ("rediss://cache.example.com:6380", True),
        ("valkeys://cache.example.com:6380/2", True),
        ("rediss://cache.example.com:6380?ssl_check_hostname=false", False),
        ("redis://cache.example.com:6379", None),
    ],
)
def test_over_tls_the_certificate_must_name_the_host_unless_the_url_says_otherwise(
    url: str, checked: bool | None
) -> None:
    store = RedisStateStore(url)
    try:
        options = store._client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        assert options.get("ssl_check_hostname") is checked
    finally:
        store.close()
