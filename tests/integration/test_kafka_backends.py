"""``open_backends`` opens the Kafka event log when ``AM_BUS_URL`` is set."""

from __future__ import annotations

import uuid
from pathlib import Path

from services.kafka import KafkaBroker

from audience_manager.backends import open_backends
from audience_manager.bus.embedded import EmbeddedEventBus
from audience_manager.bus.kafka import KafkaEventBus
from audience_manager.config import Settings


def test_a_bus_url_opens_kafka(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, bus_url=f"kafka://{kafka_broker.bootstrap}", partitions=3
    )
    backends = open_backends(settings)
    try:
        bus = backends.bus
        assert isinstance(bus, KafkaEventBus)
        topic = f"t-{uuid.uuid4().hex[:12]}"
        [(partition, offset)] = bus.publish(topic, [("user-1", b"event")])
        assert (partition, offset) == (bus.partition_for("user-1"), 0)
        with bus.consumer(topic, "g") as consumer:
            consumer.assign([partition])
            [record] = consumer.poll(timeout=10.0)
        assert (record.key, record.value) == ("user-1", b"event")
        assert bus.beginning_offsets(topic) == {0: 0, 1: 0, 2: 0}
    finally:
        backends.close()
    assert not (tmp_path / "log").exists()


def test_without_a_bus_url_the_log_is_embedded(tmp_path: Path) -> None:
    backends = open_backends(Settings(data_dir=tmp_path))
    try:
        assert isinstance(backends.bus, EmbeddedEventBus)
    finally:
        backends.close()
