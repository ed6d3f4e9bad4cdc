"""Engine benchmark: 1M users, 100 mixed segments, a realistic event mix, one process.

Prints events/s through ``Engine.apply``, the backfill time of one new segment over every
profile, resident bytes per profile, and the time of a 5-operand audience count.

    .venv/bin/python bench/engine.py [--users 1000000] [--events 2000000] [--batch 20000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from audience_manager.engine import Engine, Event, ManualClock, SegmentDefinition
from audience_manager.engine.snapshot import load_snapshot, save_snapshot
from audience_manager.membership import parse_audience
from audience_manager.membership.audience import count as audience_count
from audience_manager.rules.model import parse_rules

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "IT", "NL", "SE"]
PLANS = ["free", "basic", "pro", "enterprise"]
DEVICES = ["ios", "android", "web", "desktop"]
CATEGORIES = ["electronics", "books", "fashion", "home", "sports", "toys", "beauty", "food"]
CITIES = [f"city-{i}" for i in range(500)]


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def segments() -> list[SegmentDefinition]:
    """100 segments: attribute, windowed event counts, aggregates, references."""
    rules: list[dict[str, Any]] = []
    for i in range(40):  # attribute conditions on traits and built-ins
        shape = i % 8
        if shape == 0:
            rules.append(
                {"conditions": [{"field": "country", "operator": "eq", "value": COUNTRIES[i % 12]}]}
            )
        elif shape == 1:
            rules.append(
                {
                    "conditions": [
                        {
                            "field": "age",
                            "operator": "between",
                            "value": [18 + i % 30, 30 + i % 30],
                        },
                        {"field": "plan", "operator": "in", "value": PLANS[: 1 + i % 3]},
                    ]
                }
            )
        elif shape == 2:
            rules.append(
                {"conditions": [{"field": "score", "operator": "gt", "value": (i % 10) / 10}]}
            )
        elif shape == 3:
            rules.append(
                {
                    "match": "any",
                    "conditions": [
                        {"field": "device", "operator": "eq", "value": DEVICES[i % 4]},
                        {"field": "emailVerified", "operator": "eq", "value": True},
                    ],
                }
            )
        elif shape == 4:
            rules.append(
                {
                    "conditions": [
                        {"field": "city", "operator": "starts_with", "value": f"city-{i % 5}"}
                    ]
                }
            )
        elif shape == 5:
            rules.append(
                {
                    "conditions": [
                        {"field": "signupDate", "operator": "after", "value": "2025-06-01"},
                        {"not": {"field": "plan", "operator": "eq", "value": "free"}},
                    ]
                }
            )
        elif shape == 6:
            rules.append(
                {
                    "conditions": [
                        {"field": "totalSpent", "operator": "gt", "value": 100 * (1 + i % 5)}
                    ]
                }
            )
        else:
            rules.append(
                {
                    "conditions": [
                        {"field": "eventCount", "operator": "gte", "value": 2 + i % 4},
                        {"field": "lastSeen", "operator": "within_last", "value": "7d"},
                    ]
                }
            )
    for i in range(25):  # event counts in windows
        rules.append(
            {
                "conditions": [
                    {
                        "event": ["view", "add_to_cart", "purchase"][i % 3],
                        "where": [
                            {"field": "category", "operator": "eq", "value": CATEGORIES[i % 8]}
                        ],
                        "count": {"operator": "gte", "value": 1 + i % 3},
                        "within": ["1d", "7d", "30d"][i % 3],
                    }
                ]
            }
        )
    for i in range(20):  # aggregates over purchases
        rules.append(
            {
                "conditions": [
                    {
                        "event": "purchase",
                        "aggregate": ["sum", "max", "avg", "sum"][i % 4],
                        "property": "amount",
                        "operator": "gt",
                        "value": 50 + 25 * (i % 6),
                        "within": ["7d", "30d", "90d", "365d"][i % 4],
                    }
                ]
            }
        )
    definitions = [
        SegmentDefinition(f"seg-{i}", f"Segment {i}", parse_rules(r)) for i, r in enumerate(rules)
    ]
    for i in range(15):  # references to the segments above
        a, b, c = f"seg-{i}", f"seg-{40 + i}", f"seg-{65 + i % 20}"
        rule = {
            "conditions": [
                {"segment": a, "operator": "in"},
                {
                    "match": "any",
                    "conditions": [
                        {"segment": b, "operator": "in"},
                        {"segment": c, "operator": "not_in"},
                    ],
                },
            ]
        }
        definitions.append(
            SegmentDefinition(f"seg-{85 + i}", f"Segment {85 + i}", parse_rules(rule))
        )
    return definitions


def profile_events(users: int, chunk: int) -> Iterator[list[Event]]:
    """One identify event per user with ten traits."""
    rng = np.random.default_rng(1)
    for start in range(0, users, chunk):
        n = min(chunk, users - start)
        country = rng.integers(0, len(COUNTRIES), n)
        plan = rng.integers(0, len(PLANS), n)
        age = rng.integers(16, 80, n)
        score = rng.random(n)
        device = rng.integers(0, len(DEVICES), n)
        city = rng.integers(0, len(CITIES), n)
        verified = rng.random(n) < 0.6
        signup = rng.integers(0, 700, n)
        batch = []
        for j in range(n):
            traits = {
                "country": COUNTRIES[country[j]],
                "plan": PLANS[plan[j]],
                "age": int(age[j]),
                "score": round(float(score[j]), 3),
                "device": DEVICES[device[j]],
                "city": CITIES[city[j]],
                "emailVerified": bool(verified[j]),
                "signupDate": f"{2024 + signup[j] // 365}-{1 + (signup[j] % 365) // 31:02d}-01",
                "language": "en" if j % 3 else "de",
                "newsletter": j % 4 == 0,
            }
            batch.append(Event(f"user-{start + j}", "identify", T0, {}, traits))
        yield batch


def event_stream(users: int, total: int, batch: int, clock: ManualClock) -> Iterator[list[Event]]:
    """70% views, 15% add-to-cart, 10% purchases, 5% identifies; mildly out of order."""
    rng = np.random.default_rng(2)
    kinds = np.array(["view", "add_to_cart", "purchase", "identify"])
    for _ in range(0, total, batch):
        user = rng.zipf(1.3, batch) % users
        kind = kinds[rng.choice(4, batch, p=[0.70, 0.15, 0.10, 0.05])]
        category = rng.integers(0, len(CATEGORIES), batch)
        amount = np.round(rng.gamma(2.0, 40.0, batch), 2)
        jitter = rng.integers(0, 60_000, batch)
        now = clock.now
        out = []
        for j in range(batch):
            k = kind[j]
            ts = now - int(jitter[j])
            if k == "purchase":
                props: dict[str, Any] = {
                    "amount": float(amount[j]),
                    "category": CATEGORIES[category[j]],
                }
                out.append(Event(f"user-{user[j]}", "purchase", ts, props))
            elif k == "identify":
                out.append(
                    Event(f"user-{user[j]}", "identify", ts, {}, {"plan": PLANS[category[j] % 4]})
                )
            else:
                props = {"category": CATEGORIES[category[j]], "page": f"/p/{category[j]}"}
                out.append(Event(f"user-{user[j]}", str(k), ts, props))
        yield out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()

    gc.collect()
    baseline = rss_bytes()
    clock = ManualClock(T0)
    engine = Engine(clock)
    for definition in segments():
        engine.upsert_segment(definition)
    print(f"segments: {len(segments())}", flush=True)

    started = time.perf_counter()
    for batch in profile_events(args.users, 50_000):
        engine.apply(batch)
    print(f"profiles loaded: {args.users:,} in {time.perf_counter() - started:.1f} s", flush=True)

    applied, busy, changes = 0, 0.0, 0
    for batch in event_stream(args.users, args.events, args.batch, clock):
        clock.advance(60_000)  # a minute of event time per batch
        t = time.perf_counter()
        result = engine.apply(batch)
        busy += time.perf_counter() - t
        applied += len(batch)
        changes += len(result.changes)
    print(
        f"apply: {applied:,} events in {busy:.2f} s = {applied / busy:,.0f} events/s "
        f"(batches of {args.batch:,}; {changes:,} membership changes)",
        flush=True,
    )

    clock.advance(8 * DAY)
    t = time.perf_counter()
    expired = engine.advance()
    print(f"advance 8 days: {len(expired):,} changes in {time.perf_counter() - t:.2f} s")

    new_segment = SegmentDefinition(
        "seg-new",
        "New segment",
        parse_rules(
            {
                "conditions": [
                    {"field": "country", "operator": "in", "value": ["US", "CA", "GB"]},
                    {"field": "age", "operator": "gte", "value": 25},
                    {
                        "match": "any",
                        "conditions": [
                            {"field": "totalSpent", "operator": "gt", "value": 150},
                            {"segment": "seg-3", "operator": "in"},
                        ],
                    },
                ]
            }
        ),
    )
    t = time.perf_counter()
    engine.upsert_segment(new_segment)
    backfill = time.perf_counter() - t
    size = engine.membership.size("seg-new")
    print(
        f"backfill of one new segment over {args.users:,} profiles: {backfill:.3f} s "
        f"({size:,} members)"
    )

    gc.collect()
    per_profile = (rss_bytes() - baseline) / args.users
    print(
        f"RSS per profile: {per_profile:,.0f} bytes (engine state after all events, "
        f"10 traits each, 100 segments)"
    )

    with tempfile.TemporaryDirectory() as directory:
        t = time.perf_counter()
        path = save_snapshot(Path(directory), engine, {0: applied})
        saved = time.perf_counter() - t
        t = time.perf_counter()
        load_snapshot(path, clock)
        loaded = time.perf_counter() - t
        print(
            f"snapshot: {path.stat().st_size / 1e6:,.0f} MB, saved in {saved:.2f} s, "
            f"loaded in {loaded:.2f} s"
        )

    expression = parse_audience(
        {
            "and": [
                "seg-0",
                {"or": ["seg-2", "seg-10"]},
                {"not": "seg-4"},
                "seg-40",
            ]
        }
    )
    timings = []
    for _ in range(200):
        t = time.perf_counter()
        audience_count(expression, engine.membership)
        timings.append((time.perf_counter() - t) * 1000)
    timings.sort()
    print(
        f"5-operand audience count: median {statistics.median(timings):.3f} ms, "
        f"p99 {timings[int(len(timings) * 0.99) - 1]:.3f} ms"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
