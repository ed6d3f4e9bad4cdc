"""The processor alone: events already in the embedded log, applied and committed.

Fills the log with purchase events over many users, then runs the processor loop until it
has consumed them all, and prints events/s with the time spent per stage. No HTTP: this is
the ceiling the end-to-end figure can reach.

    .venv/bin/python bench/processor.py [--events 300000] [--users 100000] [--segments 10]
    .venv/bin/python bench/processor.py --profile      # cProfile's top functions as well
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from audience_manager.bus.embedded import EmbeddedEventBus
from audience_manager.catalog import CatalogService, create_catalog_engine, migrate
from audience_manager.catalog.schemas import SegmentCreate
from audience_manager.catalog.watch import CatalogWatcher
from audience_manager.processor.codec import WireEvent, encode_event
from audience_manager.processor.relay import CHANGES
from audience_manager.processor.runtime import EVENTS, Processor, ProcessorConfig
from audience_manager.processor.service import tune_gc
from audience_manager.store import EmbeddedStateStore

T0 = int(time.time() * 1000) - 86_400_000  # events of the last day


def fill(bus: EmbeddedEventBus, events: int, users: int) -> None:
    batch: list[tuple[str, bytes]] = []
    for i in range(events):
        user = f"u{i * 7919 % users}"
        wire = WireEvent(
            user_id=user,
            event_type="purchase",
            timestamp=T0 + i,
            properties={"amount": 1 + i % 300, "category": f"c{i % 7}"},
            received_at=T0 + i,
        )
        batch.append((user, encode_event(wire)))
        if len(batch) == 10_000:
            bus.publish(EVENTS, batch)
            batch.clear()
    if batch:
        bus.publish(EVENTS, batch)


RULES = [
    {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]},
    {
        "conditions": [
            {"event": "purchase", "count": {"operator": "gte", "value": 3}, "within": "7d"}
        ]
    },
    {"conditions": [{"field": "lastSeen", "operator": "within_last", "value": "30d"}]},
    {
        "conditions": [
            {
                "event": "purchase",
                "where": [{"field": "category", "operator": "eq", "value": "c3"}],
                "aggregate": "sum",
                "property": "amount",
                "operator": "gt",
                "value": 400,
                "within": "30d",
            }
        ]
    },
    {
        "match": "any",
        "conditions": [
            {"field": "purchaseCount", "operator": "gte", "value": 5},
            {"not": {"field": "totalSpent", "operator": "lt", "value": 200}},
        ],
    },
]


def segments(catalog: CatalogService, count: int) -> None:
    """``count`` segments cycling through the rule shapes above, thresholds varied."""
    for i in range(count):
        rules = RULES[i % len(RULES)]
        catalog.create_segment(SegmentCreate(name=f"segment {i}", rules=rules))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--publish-changes", action="store_true", help="relay changes to their topic as well"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        bus = EmbeddedEventBus(root / "log", partitions=8, fsync=False)
        store = EmbeddedStateStore(root / "state")
        catalog_url = f"sqlite:///{root / 'catalog.db'}"
        migrate(catalog_url)
        catalog = CatalogService(create_catalog_engine(catalog_url))
        segments(catalog, args.segments)
        fill(bus, args.events, args.users)
        config = ProcessorConfig(
            max_batch=args.batch,
            snapshots=root / "snapshots",
            changes_topic=CHANGES if args.publish_changes else None,
        )
        watcher = CatalogWatcher(catalog_url)
        processor = Processor(bus, store, catalog, config, watcher)
        processor.recover()
        tune_gc()
        profiler = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        applied = 0
        while applied < args.events:
            applied += processor.step()
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
        print(
            f"processor: {applied:,} events over {args.users:,} users, {args.segments} "
            f"segments, batches of {args.batch:,}: {elapsed:.2f} s = "
            f"{applied / elapsed:,.0f} events/s"
        )
        print(f"members: {sorted(store.sizes().values())}")
        processor.close()
        watcher.close()
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        bus.close()
        store.close()


if __name__ == "__main__":
    main()
