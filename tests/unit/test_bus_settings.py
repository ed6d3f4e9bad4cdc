"""Choosing and configuring the event log from settings: ``AM_BUS_*``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from audience_manager.backends import kafka_client_config
from audience_manager.config import Settings


@pytest.mark.parametrize(
    ("url", "bootstrap"),
    [
        ("kafka://broker:9092", "broker:9092"),
        ("kafka://a.example.com:9092,b.example.com:9093/", "a.example.com:9092,b.example.com:9093"),
        ("kafka+ssl://[::1]:9093", "[::1]:9093"),
    ],
)
def test_a_kafka_url_names_the_brokers(url: str, bootstrap: str) -> None:
    assert Settings(bus_url=url).bus_bootstrap == bootstrap


@pytest.mark.parametrize(
    "url",
    ["broker:9092", "http://broker:9092", "kafka://broker", "kafka://a:9092,", "kafka://a:70000"],
)
def test_a_malformed_bus_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="kafka://host:9092"):
        Settings(bus_url=url)


def test_without_a_url_the_log_is_embedded() -> None:
    assert Settings().bus_bootstrap is None


def test_the_security_protocol_follows_the_url_and_sasl() -> None:
    sasl = {
        "bus_sasl_mechanism": "SCRAM-SHA-512",
        "bus_sasl_username": "am",
        "bus_sasl_password": "hunter2",
    }
    assert Settings(bus_url="kafka://b:9092").bus_protocol == "PLAINTEXT"
    assert Settings(bus_url="kafka+ssl://b:9092").bus_protocol == "SSL"
    assert Settings(bus_url="kafka://b:9092", **sasl).bus_protocol == "SASL_PLAINTEXT"
    assert Settings(bus_url="kafka+ssl://b:9092", **sasl).bus_protocol == "SASL_SSL"
    explicit = Settings(bus_url="kafka://b:9092", bus_security_protocol="SSL")
    assert explicit.bus_protocol == "SSL"


def test_inconsistent_security_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="needs TLS"):
        Settings(bus_url="kafka+ssl://b:9092", bus_security_protocol="PLAINTEXT")
    with pytest.raises(ValidationError, match="SASL needs"):
        Settings(bus_url="kafka://b:9092", bus_sasl_mechanism="PLAIN", bus_sasl_username="am")
    monkeypatch.setenv("AM_BUS_SASL_PASSWORD", "hunter2")
    with pytest.raises(ValidationError, match="need a SASL security protocol, not SSL"):
        Settings(bus_url="kafka+ssl://b:9092", bus_sasl_username="am")


def test_the_client_config_carries_the_security_settings_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AM_BUS_URL", "kafka+ssl://b:9092")
    monkeypatch.setenv("AM_BUS_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("AM_BUS_SASL_USERNAME", "am")
    monkeypatch.setenv("AM_BUS_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("AM_BUS_SSL_CA_LOCATION", "/etc/kafka/ca.pem")
    settings = Settings()
    assert kafka_client_config(settings) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "am",
        "sasl.password": "hunter2",
        "ssl.ca.location": str(Path("/etc/kafka/ca.pem")),
    }
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_a_plain_kafka_url_needs_no_security_settings() -> None:
    assert kafka_client_config(Settings(bus_url="kafka://b:9092")) == {
        "security.protocol": "PLAINTEXT"
    }


def test_replication_defaults_to_the_brokers_and_must_be_positive() -> None:
    assert Settings().bus_replication is None
    assert Settings(bus_replication=3).bus_replication == 3
    with pytest.raises(ValidationError):
        Settings(bus_replication=0)
