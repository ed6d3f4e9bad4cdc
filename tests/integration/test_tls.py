"""TLS to the production backends: Kafka (``kafka+ssl://`` with ``AM_BUS_SSL_CA_LOCATION``)
and Redis or Valkey (``rediss://`` with ``ssl_ca_certs`` in the URL), each behind a TLS proxy
the tests start (``services.tls``), with a certificate of a throwaway authority."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import msgspec
import pytest
from services.kafka import GROUP_CONFIG
from services.tls import Certificates, TlsProxy, make_certificates, tls_proxy
from services.valkey import ValkeyService

from audience_manager.backends import kafka_client_config, open_backends
from audience_manager.bus import BusUnavailable, Consumer, Record
from audience_manager.bus.kafka import KafkaEventBus
from audience_manager.config import Settings
from audience_manager.store import ProfileWrite, StateCommit, StoreUnavailable
from audience_manager.store.redis import RedisStateStore

#: Seconds within which a client that cannot complete the handshake must give up.
FAILS_WITHIN = 5.0


@pytest.fixture
def topic() -> str:
    return f"tls-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def prefix(valkey_tls: ValkeyService) -> Iterator[str]:
    with valkey_tls.prefix() as prefix:
        yield prefix


@pytest.fixture
def elsewhere(tmp_path: Path) -> Certificates:
    """A certificate for another host than the one connected to, from an authority of its own
    (which the client is given)."""
    return make_certificates(tmp_path / "elsewhere", ("elsewhere.invalid",))


def poll_until(consumer: Consumer, count: int, seconds: float = 10.0) -> list[Record]:
    """Poll until ``count`` records came, or fail after ``seconds``."""
    read: list[Record] = []
    give_up = time.monotonic() + seconds
    while len(read) < count:
        assert time.monotonic() < give_up, f"{len(read)} of {count} records read"
        read += consumer.poll(timeout=0.5)
    return read


def short_bus(settings: Settings) -> KafkaEventBus:
    """The bus ``open_backends`` would open for ``settings``, with a one-second timeout."""
    assert settings.bus_bootstrap is not None
    return KafkaEventBus(
        settings.bus_bootstrap,
        partitions=1,
        client_config=kafka_client_config(settings),
        timeout=1,
    )


def test_kafka_over_tls_publishes_consumes_and_commits(
    kafka_tls: TlsProxy, tls_certificates: Certificates, tmp_path: Path, topic: str
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        bus_url=f"kafka+ssl://{kafka_tls.address}",
        bus_ssl_ca_location=tls_certificates.ca,
        partitions=2,
    )
    backends = open_backends(settings)
    try:
        bus = backends.bus
        assert isinstance(bus, KafkaEventBus)
        records = [(f"user-{i}", f"event-{i}".encode()) for i in range(6)]
        placed = bus.publish(topic, records)
        assert [partition for partition, _ in placed] == [bus.partition_for(k) for k, _ in records]
        bus.publish_many(topic, ["user-late"], [b"late"])
        with bus.consumer(topic, f"{topic}-group") as consumer:
            consumer.assign()
            read = poll_until(consumer, 7)
            assert sorted(r.value for r in read) == sorted([v for _, v in records] + [b"late"])
            consumer.commit()
            committed = consumer.committed()
        assert sum(committed.values()) == 7
        with bus.consumer(topic, f"{topic}-group") as consumer:
            consumer.assign()
            assert consumer.positions() == committed
            assert consumer.poll(timeout=0.5) == []
    finally:
        backends.close()


def test_kafka_group_members_subscribe_over_tls(
    kafka_tls: TlsProxy, tls_certificates: Certificates, topic: str
) -> None:
    settings = Settings(
        bus_url=f"kafka+ssl://{kafka_tls.address}", bus_ssl_ca_location=tls_certificates.ca
    )
    assert settings.bus_bootstrap is not None
    with KafkaEventBus(
        settings.bus_bootstrap,
        partitions=2,
        client_config=kafka_client_config(settings),
        consumer_config=GROUP_CONFIG,
        timeout=10,
    ) as bus:
        bus.publish(topic, [("a", b"1"), ("b", b"2"), ("c", b"3")])
        with bus.consumer(topic, f"{topic}-group") as consumer:
            consumer.subscribe()
            assert sorted(r.value for r in poll_until(consumer, 3, seconds=20)) == [
                b"1",
                b"2",
                b"3",
            ]
            consumer.commit()
            assert sum(consumer.committed().values()) == 3


@pytest.mark.parametrize(
    ("scheme", "with_ca"),
    [("kafka+ssl", False), ("kafka", True)],
    ids=["without-the-ca", "plaintext"],
)
def test_kafka_that_cannot_shake_hands_is_unavailable(
    kafka_tls: TlsProxy,
    tls_certificates: Certificates,
    topic: str,
    scheme: str,
    with_ca: bool,
) -> None:
    settings = Settings(
        bus_url=f"{scheme}://{kafka_tls.address}",
        bus_ssl_ca_location=tls_certificates.ca if with_ca else None,
        bus_security_protocol="PLAINTEXT" if scheme == "kafka" else None,
    )
    started = time.monotonic()
    with short_bus(settings) as bus, pytest.raises(BusUnavailable):
        bus.publish(topic, [("user-1", b"x")])
    assert time.monotonic() - started < FAILS_WITHIN


def test_kafka_refuses_a_certificate_for_another_host(
    kafka_tls: TlsProxy, elsewhere: Certificates, topic: str
) -> None:
    with tls_proxy(elsewhere, kafka_tls.upstream) as proxy:
        settings = Settings(
            bus_url=f"kafka+ssl://{proxy.address}", bus_ssl_ca_location=elsewhere.ca
        )
        started = time.monotonic()
        with short_bus(settings) as bus, pytest.raises(BusUnavailable):
            bus.publish(topic, [("user-1", b"x")])
        assert time.monotonic() - started < FAILS_WITHIN


def test_the_state_store_works_over_tls(
    valkey_tls: ValkeyService, prefix: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, state_url=valkey_tls.url, state_prefix=prefix)
    backends = open_backends(settings)
    try:
        store = backends.store
        assert isinstance(store, RedisStateStore)
        doc = msgspec.json.encode({"userId": "alice"})
        store.commit(StateCommit({0: 3}, 1, [ProfileWrite(0, "alice", doc)], enters={"vip": [0]}))
        assert store.positions() == {0: 3}
        assert store.profile("alice") == doc
        assert store.members("vip", None, 10) == (["alice"], None)
    finally:
        backends.close()


def rediss(proxy: TlsProxy, **options: str) -> str:
    return f"rediss://{proxy.address}?{urlencode(options)}"


@pytest.mark.parametrize("how", ["without-the-ca", "plaintext"])
def test_a_state_store_that_cannot_shake_hands_is_unavailable(
    valkey_tls: ValkeyService, prefix: str, how: str
) -> None:
    url = valkey_tls.url.split("?")[0]
    if how == "plaintext":
        url = url.replace("rediss://", "redis://", 1)
    store = RedisStateStore(url, prefix=prefix)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.positions()
        assert time.monotonic() - started < FAILS_WITHIN
    finally:
        store.close()


def test_the_state_store_refuses_a_certificate_for_another_host(
    valkey_server: ValkeyService, elsewhere: Certificates, prefix: str
) -> None:
    upstream = valkey_server.url.split("://", 1)[1].rpartition("@")[2].split("/")[0]
    with tls_proxy(elsewhere, upstream) as proxy:
        store = RedisStateStore(rediss(proxy, ssl_ca_certs=str(elsewhere.ca)), prefix=prefix)
        try:
            with pytest.raises(StoreUnavailable, match="certificate is not valid"):
                store.positions()
        finally:
            store.close()
        # Where the URL turns the check off, the store trusts any certificate of the CA.
        url = rediss(proxy, ssl_ca_certs=str(elsewhere.ca), ssl_check_hostname="false")
        store = RedisStateStore(url, prefix=prefix)
        try:
            assert store.positions() == {}
        finally:
            store.close()


@pytest.mark.parametrize("scheme", ["kafka+ssl", "kafka"], ids=["without-the-ca", "plaintext"])
def test_a_bus_opened_from_settings_gives_up_on_a_failed_handshake_soon(
    kafka_tls: TlsProxy, tmp_path: Path, scheme: str
) -> None:
    # The bus's own timeout stays at its 30 s default: the failure is reported well before.
    settings = Settings(data_dir=tmp_path, bus_url=f"{scheme}://{kafka_tls.address}")
    started = time.monotonic()
    backends = open_backends(settings)
    try:
        with pytest.raises(BusUnavailable):
            backends.bus.publish(f"tls-{uuid.uuid4().hex[:12]}", [("user-1", b"x")])
    finally:
        backends.close()
    assert time.monotonic() - started < FAILS_WITHIN
