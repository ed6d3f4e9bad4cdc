"""Choosing the state store from settings: ``AM_STATE_URL``, ``AM_STATE_PREFIX``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from audience_manager.config import Settings


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379",
        "rediss://app:s3cret@cache.example.com:6380/2",
        "valkey://10.0.0.7",
        "valkeys://:s3cret@[::1]:6379/0?socket_timeout=2",
    ],
)
def test_a_redis_or_valkey_url_is_accepted_and_kept_secret(url: str) -> None:
    settings = Settings(state_url=url)
    assert settings.state_url is not None
    assert settings.state_url.get_secret_value() == url
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    "url", ["localhost:6379", "http://localhost:6379", "redis://", "redis://host/db", "redis:/h"]
)
def test_a_malformed_state_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError, match="redis://") as refused:
        Settings(state_url=url.replace("host", "u:s3cret@host"))
    assert "s3cret" not in str(refused.value)


def test_without_a_url_the_store_is_embedded() -> None:
    assert Settings().state_url is None


def test_the_key_prefix_cannot_hold_braces() -> None:
    with pytest.raises(ValidationError):
        Settings(state_prefix="{am}")
