"""The Quix Streams side of ``bench/kafka_processor.py``: per-user aggregation of ``events``.

Runs in its own environment, since quixstreams pins older confluent-kafka and pydantic
versions than the project does (``bench/requirements-quix.txt``)::

    python3 -m venv .venv-quix && .venv-quix/bin/pip install -r bench/requirements-quix.txt

``bench/kafka_processor.py`` starts it as a subprocess; it can also be run by hand against
a topic already filled (``--events`` is how many messages to wait for)::

    .venv-quix/bin/python bench/quix_aggregation.py --bootstrap HOST:PORT --events 300000 \
        [--segments ids.json --changes-topic quix-membership-changes]

A Quix ``Application`` (a consumer group of its own, ``auto_offset_reset="earliest"``,
RocksDB state in a temporary directory, changelog topics on as by default) reads the JSON
values of the topic keyed by user id.

- Bare (no ``--segments``): it keeps, per user, the count of events, the count of
  purchases, the sum of ``amount``, the first and last event time, and whether the sum is
  over 1000 (the "High Value Users" rule). It emits nothing.
- The same work as ours (``--segments``: a JSON file of segment ids, in the order the
  benchmark created them, segment ``i`` having rule ``i % 5`` of ``bench/processor.py``):
  it also keeps each user's purchases of the last 30 days (time, amount, whether of
  category ``c3``), evaluates the five rules after every event (total spent over 1000;
  3 purchases within 7 days; last seen within 30 days; over 400 spent on ``c3`` within 30
  days; 5 purchases or not under 200 spent; only those its segments have, keeping the
  purchases only if a rule needs them), and publishes every segment the user enters
  or leaves to ``--changes-topic``, one message per event that changed something, keyed
  by user id, in the format of ours: ``{"userId", "changes": [{"segmentId", "change",
  "at", "sequence"}, ...]}``. It evaluates each of the five rules once per event and
  looks the changes of its segments up in a table made at start (segments sharing a rule
  share its membership): less Python per event than a loop over every segment.

After the last expected message it calls ``app.stop()`` and prints one JSON line:
messages processed, the seconds from the first message to the last, the seconds until
``run()`` returned (final checkpoint and shutdown included: the changes are published by
then), and checks on what it read (users, sum of amounts, users over 1000, changes
emitted, members per segment) for the caller to compare.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import uuid
import warnings
from importlib.metadata import version
from typing import Any

HIGH_VALUE = 1000
DAY_MS = 86_400_000
RULES = 5  # the rule shapes of bench/processor.py, segment i having rule i % RULES


def rule_results(profile: dict[str, Any], now: int, used: int) -> int:
    """The rules of ``bench/processor.py`` among ``used`` (bits) over ``profile`` at
    ``now``, as bits."""
    spent = profile["spent"]
    recent = profile["recent"]  # [time, amount, of c3] of the purchases of the last 30 days
    week = now - 7 * DAY_MS
    month = now - 30 * DAY_MS
    bits = 1 if used & 1 and spent > HIGH_VALUE else 0
    if used & 2 and sum(1 for at, _, _ in recent if at >= week) >= 3:
        bits |= 2
    if used & 4 and profile["last"] >= month:
        bits |= 4
    if used & 8 and sum(amount for at, amount, c3 in recent if c3 and at >= month) > 400:
        bits |= 8
    if used & 16 and (profile["purchases"] >= 5 or not spent < 200):
        bits |= 16
    return bits


def change_table(segments: list[str]) -> list[list[list[tuple[str, str]]]]:
    """``table[old][new]``: the (segment id, enter|exit) pairs when the rule bits go from
    ``old`` to ``new``, segments in creation order."""
    table = []
    for old in range(1 << RULES):
        row = []
        for new in range(1 << RULES):
            changes = []
            for i, segment in enumerate(segments):
                was, now = old >> (i % RULES) & 1, new >> (i % RULES) & 1
                if was != now:
                    changes.append((segment, "enter" if now else "exit"))
            row.append(changes)
        table.append(row)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default="events")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--group", default=None, help="default: quix-bench-<random>")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--loglevel", default="WARNING")
    parser.add_argument("--segments", default=None, help="a JSON file of segment ids")
    parser.add_argument("--changes-topic", default="quix-membership-changes")
    parser.add_argument(
        "--no-changes", action="store_true", help="with --segments: evaluate, publish nothing"
    )
    args = parser.parse_args()
    segments: list[str] = []
    if args.segments:
        with open(args.segments) as file:
            segments = json.load(file)
    table = change_table(segments)
    used = sum({1 << (i % RULES) for i in range(len(segments))})  # the rules segments have
    windowed = bool(used & (2 | 8))  # rules over the purchases of the last 30 days
    members = [0] * (1 << RULES)  # users per combination of rule bits

    try:
        # Kept quiet: a dependency of quixstreams (authlib) warns of deprecations on import.
        with warnings.catch_warnings(record=True):
            from quixstreams import Application, State
    except ImportError:
        sys.exit(
            "quixstreams is not installed in this environment: "
            "pip install -r bench/requirements-quix.txt"
        )
    logging.basicConfig(level=args.loglevel)

    expected = args.events
    seen = {"messages": 0, "users": 0, "amount": 0.0, "high_value": 0, "changes": 0}
    times: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group or f"quix-bench-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            state_dir=state_dir,
            # tansu's first group join waits about half the session timeout.
            consumer_extra_config={
                "session.timeout.ms": args.session_timeout_ms,
                "heartbeat.interval.ms": 500,
            },
            loglevel=args.loglevel,
        )
        topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
        sdf = app.dataframe(topic)

        def count(profile: dict[str, Any], value: dict[str, Any], at: int, amount: int) -> None:
            """The built-in attributes: events, purchases, total spent, first and last seen."""
            profile["events"] += 1
            if value.get("eventType") == "purchase":
                profile["purchases"] += 1
                was_high = profile["spent"] > HIGH_VALUE
                profile["spent"] += amount
                seen["amount"] += amount
                if not was_high and profile["spent"] > HIGH_VALUE:
                    seen["high_value"] += 1
            profile["first"] = min(profile["first"], at)
            profile["last"] = max(profile["last"], at)

        def aggregate(value: dict[str, Any], state: State) -> None:
            if not seen["messages"]:
                times["first"] = time.perf_counter()
            at = value["timestamp"]
            amount = value.get("properties", {}).get("amount", 0)
            profile = state.get("profile")
            if profile is None:
                seen["users"] += 1
                profile = {"events": 0, "purchases": 0, "spent": 0, "first": at, "last": at}
            count(profile, value, at, amount)
            state.set("profile", profile)
            seen["messages"] += 1
            if seen["messages"] == expected:
                times["last"] = time.perf_counter()
                app.stop()

        def segment(value: dict[str, Any], state: State) -> dict[str, Any] | None:
            """The same work as ours: aggregates, the rules, the membership changes."""
            if not seen["messages"]:
                times["first"] = time.perf_counter()
            at = value["timestamp"]
            properties = value.get("properties", {})
            amount = properties.get("amount", 0)
            now = int(time.time() * 1000)
            profile = state.get("profile")
            if profile is None:
                seen["users"] += 1
                profile = {
                    "events": 0,
                    "purchases": 0,
                    "spent": 0,
                    "first": at,
                    "last": at,
                    "recent": [],
                    "rules": 0,
                }
                members[0] += 1
            count(profile, value, at, amount)
            if windowed and value.get("eventType") == "purchase":
                month = now - 30 * DAY_MS
                recent = [p for p in profile["recent"] if p[0] >= month]
                recent.append([at, amount, properties.get("category") == "c3"])
                profile["recent"] = recent
            old, new = profile["rules"], rule_results(profile, now, used)
            profile["rules"] = new
            state.set("profile", profile)
            seen["messages"] += 1
            if seen["messages"] == expected:
                times["last"] = time.perf_counter()
                app.stop()
            if old == new:
                return None
            members[old] -= 1
            members[new] += 1
            changes = table[old][new]
            first = seen["changes"] + 1
            seen["changes"] += len(changes)
            if args.no_changes:
                return None
            return {
                "userId": value["userId"],
                "changes": [
                    {"segmentId": s, "change": c, "at": at, "sequence": first + i}
                    for i, (s, c) in enumerate(changes)
                ],
            }

        if segments:
            changes = app.topic(args.changes_topic, key_serializer="str", value_serializer="json")
            sdf = sdf.apply(segment, stateful=True).filter(lambda message: message is not None)
            sdf = sdf.to_topic(changes)
        else:
            sdf.update(aggregate, stateful=True)
        app.run()
        times["exit"] = time.perf_counter()

    if seen["messages"] < expected:
        sys.exit(f"Quix Streams stopped after {seen['messages']} of {expected} messages")
    sizes = {
        segment: sum(count for bits, count in enumerate(members) if bits >> (i % RULES) & 1)
        for i, segment in enumerate(segments)
    }
    result = {
        **seen,
        "sizes": sizes,
        "seconds": times["last"] - times["first"],
        "seconds_to_exit": times["exit"] - times["first"],
        "quixstreams": version("quixstreams"),
        "confluent_kafka": version("confluent-kafka"),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
