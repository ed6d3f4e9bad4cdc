"""The Quix Streams side of ``bench/kafka_processor.py``: per-user aggregation of ``events``.

Runs in its own environment, since quixstreams pins older confluent-kafka and pydantic
versions than the project does (``bench/requirements-quix.txt``)::

    python3 -m venv .venv-quix && .venv-quix/bin/pip install -r bench/requirements-quix.txt

``bench/kafka_processor.py`` starts it as a subprocess; it can also be run by hand against
a topic already filled (``--events`` is how many messages to wait for)::

    .venv-quix/bin/python bench/quix_aggregation.py --bootstrap HOST:PORT --events 300000

A Quix ``Application`` (a consumer group of its own, ``auto_offset_reset="earliest"``,
RocksDB state in a temporary directory, changelog topics on as by default) reads the JSON
values of the topic keyed by user id and keeps, per user, what the built-in attributes
need: the count of events, the count of purchases, the sum of ``amount``, the first and
last event time, and whether the sum is over 1000 (the "High Value Users" rule). It emits
nothing. After the last expected message it calls ``app.stop()`` and prints one JSON line:
messages processed, the seconds from the first message to the last, the seconds until
``run()`` returned (final checkpoint and shutdown included), and checks on what it read
(users, sum of amounts, users over 1000) for the caller to compare.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default="events")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--group", default=None, help="default: quix-bench-<random>")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--loglevel", default="WARNING")
    args = parser.parse_args()

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
    seen = {"messages": 0, "users": 0, "amount": 0.0, "high_value": 0}
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

        def aggregate(value: dict[str, Any], state: State) -> None:
            if not seen["messages"]:
                times["first"] = time.perf_counter()
            at = value["timestamp"]
            amount = value.get("properties", {}).get("amount", 0)
            profile = state.get("profile")
            if profile is None:
                seen["users"] += 1
                profile = {"events": 0, "purchases": 0, "spent": 0, "first": at, "last": at}
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
            state.set("profile", profile)
            seen["messages"] += 1
            if seen["messages"] == expected:
                times["last"] = time.perf_counter()
                app.stop()

        sdf.update(aggregate, stateful=True)
        app.run()
        times["exit"] = time.perf_counter()

    if seen["messages"] < expected:
        sys.exit(f"Quix Streams stopped after {seen['messages']} of {expected} messages")
    result = {
        **seen,
        "seconds": times["last"] - times["first"],
        "seconds_to_exit": times["exit"] - times["first"],
        "quixstreams": version("quixstreams"),
        "confluent_kafka": version("confluent-kafka"),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
