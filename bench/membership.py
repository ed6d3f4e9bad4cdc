"""Membership figures: audience counts and deep member pages at a million users.

Run: ``python bench/membership.py [--users N] [--repeat R] [--seed S]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from audience_manager.membership import (
    SegmentMembership,
    UserIds,
    count,
    evaluate,
    parse_audience,
)

SEGMENTS = ["s1", "s2", "s3", "s4", "s5"]
AUDIENCES = {
    "and of 5": {"and": SEGMENTS},
    "or of 5": {"or": SEGMENTS},
    "and 3, not 2": {"and": [*SEGMENTS[:3], {"not": SEGMENTS[3]}, {"not": SEGMENTS[4]}]},
}


def timed(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and 99th percentile of ``repeat`` runs, in milliseconds."""
    action()  # warm up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    median, p99 = np.percentile(np.array(samples) * 1e3, [50, 99])
    return float(median), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    ids = UserIds()
    user_ids = [f"user-{i:08d}" for i in range(args.users)]
    started = time.perf_counter()
    dense = ids.intern_many(user_ids)
    print(f"intern_many {args.users:,} new ids: {(time.perf_counter() - started) * 1e3:.0f} ms")
    started = time.perf_counter()
    ids.intern_many(user_ids)
    print(f"intern_many {args.users:,} known ids: {(time.perf_counter() - started) * 1e3:.0f} ms")

    membership = SegmentMembership()
    membership.add_users(dense)
    started = time.perf_counter()
    for segment_id in SEGMENTS:
        density = rng.uniform(0.10, 0.60)
        membership.replace(segment_id, dense[rng.random(args.users) < density])
    build_ms = (time.perf_counter() - started) * 1e3
    sizes = ", ".join(f"{s}={membership.size(s):,}" for s in SEGMENTS)
    print(f"5 segments built in {build_ms:.0f} ms ({sizes})")

    print(f"\naudience over {args.users:,} users, {args.repeat} runs   median ms    p99 ms")
    for name, data in AUDIENCES.items():
        expr = parse_audience(data)
        median, p99 = timed(partial(count, expr, membership), args.repeat)
        size = count(expr, membership)
        print(f"  count    {name:<14} = {size:>9,}        {median:8.3f}  {p99:8.3f}")
        median, p99 = timed(partial(evaluate, expr, membership), args.repeat)
        print(f"  evaluate {name:<14}                    {median:8.3f}  {p99:8.3f}")

    largest = max(SEGMENTS, key=membership.size)
    members = membership.members(largest)
    print(f"\npage(limit=1000) of {largest} ({len(members):,} members)      median ms    p99 ms")
    for depth in (0.0, 0.5, 0.99):
        cursor = members[int(len(members) * depth)]
        page = partial(membership.page, largest, after=cursor, limit=1_000)
        median, p99 = timed(page, args.repeat)
        print(f"  after the member at rank {depth:>4.0%}                 {median:8.3f}  {p99:8.3f}")
    dense_page, _ = membership.page(largest, after=members[len(members) // 2], limit=1_000)
    median, p99 = timed(partial(ids.user_ids, dense_page), args.repeat)
    print(f"  user_ids() of one page                        {median:8.3f}  {p99:8.3f}")


if __name__ == "__main__":
    main()
