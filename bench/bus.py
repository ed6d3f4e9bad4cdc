"""Embedded event-log figures: publish throughput by batch size (fsync per batch) and poll.

Run: ``python bench/bus.py [--records N] [--value-bytes B] [--users U] [--no-fsync]
[--dir D]``; the log is written in a temporary directory under ``D`` (the system's default
temporary directory unless given), which should be on the disk being measured.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from audience_manager.bus.embedded import EmbeddedEventBus

TOPIC = "events"


def make_records(count: int, value_bytes: int, users: int) -> list[tuple[str, bytes]]:
    """``count`` records keyed by one of ``users`` user ids, values of ``value_bytes``."""
    value = os.urandom(value_bytes // 2).hex().encode()[:value_bytes]
    return [(f"user-{i % users:07d}", value) for i in range(count)]


def publish_rate(bus: EmbeddedEventBus, records: list[tuple[str, bytes]], batch: int) -> float:
    """Records per second publishing ``records`` in calls of ``batch``."""
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        bus.publish(TOPIC, records[start : start + batch])
    return len(records) / (time.perf_counter() - started)


def concurrent_rate(
    bus: EmbeddedEventBus, records: list[tuple[str, bytes]], threads: int, batch: int
) -> float:
    """Records per second with ``threads`` publishing batches of ``batch`` at once."""
    share = len(records) // threads

    def run(part: list[tuple[str, bytes]]) -> None:
        for start in range(0, len(part), batch):
            bus.publish(TOPIC, part[start : start + batch])

    workers = [
        threading.Thread(target=run, args=(records[i * share : (i + 1) * share],))
        for i in range(threads)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return share * threads / (time.perf_counter() - started)


def poll_rate(bus: EmbeddedEventBus, expected: int) -> float:
    """Records per second reading the whole topic from the start with one consumer."""
    with bus.consumer(TOPIC, "bench") as consumer:
        consumer.assign()
        seen = 0
        started = time.perf_counter()
        while seen < expected:
            seen += len(consumer.poll(10_000, timeout=1.0))
        return seen / (time.perf_counter() - started)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--value-bytes", type=int, default=150)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    fsync = not args.no_fsync
    records = make_records(args.records, args.value_bytes, args.users)
    print(f"embedded bus, {args.value_bytes}-byte values, fsync={'per batch' if fsync else 'off'}")
    with (
        tempfile.TemporaryDirectory(dir=args.dir) as directory,
        EmbeddedEventBus(directory, fsync=fsync) as bus,
    ):
        total = 0
        for batch, count in [(1, min(3_000, len(records))), (100, len(records) // 3)]:
            rate = publish_rate(bus, records[:count], batch)
            total += count
            print(f"publish, batches of {batch:>5,}: {rate:>11,.0f} records/s")
        rate = publish_rate(bus, records, 1_000)
        total += len(records)
        print(f"publish, batches of 1,000: {rate:>11,.0f} records/s")
        rate = concurrent_rate(bus, records, 8, 100)
        total += len(records) // 8 * 8
        print(f"publish, 8 threads x 100:  {rate:>11,.0f} records/s (group commit)")
        rate = poll_rate(bus, total)
        print(f"poll, {total:,} records:  {rate:>11,.0f} records/s")


if __name__ == "__main__":
    main()
