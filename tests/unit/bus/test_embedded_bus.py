"""The embedded bus across real processes: kill -9 of the writer, live readers, one writer."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from audience_manager.bus import BusError, Record
from audience_manager.bus.embedded import EmbeddedEventBus

PARTITIONS = 4

# Publishes from several threads forever, printing "<id> <partition> <offset>" per
# acknowledged record; records are keyed by their id and valued id * 3.
WRITER = """
import sys, threading
from audience_manager.bus.embedded import EmbeddedEventBus

directory, run, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
bus = EmbeddedEventBus(directory, partitions=4, segment_bytes=20_000)
lock = threading.Lock()

def publish(worker):
    sent = 0
    while True:
        size = 1 + (sent * 7 + worker) % 40
        ids = [f"{run}-{worker}-{sent + i}" for i in range(size)]
        sent += size
        acks = bus.publish("events", [(i, i.encode() * 3) for i in ids])
        lines = "".join(f"{i} {p} {o}\\n" for i, (p, o) in zip(ids, acks))
        with lock:
            sys.stdout.write(lines)
            sys.stdout.flush()

for worker in range(threads):
    threading.Thread(target=publish, args=(worker,), daemon=True).start()
threading.Event().wait()
"""

# Prints "ready" once assigned, then "<partition> <offset> <key>" per record until it has
# seen the expected number.
READER = """
import sys
from audience_manager.bus.embedded import EmbeddedEventBus

directory, expected = sys.argv[1], int(sys.argv[2])
bus = EmbeddedEventBus(directory, partitions=4)
consumer = bus.consumer("events", "reader")
consumer.assign()
print("ready", flush=True)
seen = 0
while seen < expected:
    records = consumer.poll(max_records=97, timeout=5.0)
    if not records:
        sys.exit("no records for 5 s")
    seen += len(records)
    sys.stdout.write("".join(f"{r.partition} {r.offset} {r.key}\\n" for r in records))
sys.stdout.flush()
"""

# Takes the writer lock, says so, and holds it until stdin closes.
HOLDER = """
import sys
from audience_manager.bus.embedded import EmbeddedEventBus

bus = EmbeddedEventBus(sys.argv[1], partitions=4)
bus.publish("events", [("holder", b"x")])
print("ready", flush=True)
sys.stdin.read()
"""


def start(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_all(bus: EmbeddedEventBus, group: str = "check") -> list[Record]:
    """Every record of the ``events`` topic, read with a fresh consumer."""
    total = sum(bus.end_offsets("events").values()) - sum(bus.beginning_offsets("events").values())
    with bus.consumer("events", group) as consumer:
        consumer.assign()
        records: list[Record] = []
        while len(records) < total:
            batch = consumer.poll(timeout=2.0)
            assert batch, f"read {len(records)} of {total} records"
            records.extend(batch)
        assert consumer.poll(timeout=0) == []
    return records


def test_every_acknowledged_record_survives_kill_9_of_the_writer(tmp_path: Path) -> None:
    rng = random.Random()
    acknowledged: dict[tuple[int, int], str] = {}
    for run in range(3):
        with start(WRITER, tmp_path, f"run{run}", 3) as writer:
            assert writer.stdout is not None
            lines = [writer.stdout.readline()]  # the first ack: it is publishing
            collector = threading.Thread(target=lines.extend, args=(writer.stdout,))
            collector.start()
            time.sleep(rng.uniform(0.0, 0.3))
            writer.kill()
            collector.join()
        complete = [line.split() for line in lines if line.endswith("\n")]
        assert complete, "the writer acknowledged nothing"
        for record_id, partition_text, offset_text in complete:
            acknowledged[int(partition_text), int(offset_text)] = record_id

        with EmbeddedEventBus(tmp_path, partitions=PARTITIONS) as bus:
            ends_before = bus.end_offsets("events")
            found = {(r.partition, r.offset): r for r in read_all(bus)}
            for position, record_id in acknowledged.items():
                record = found[position]
                assert (record.key, record.value) == (record_id, record_id.encode() * 3)
            # The lock went with the killed process; offsets go on right after the last
            # record of each partition.
            marks = [f"mark-{run}-{i}" for i in range(64)]
            acks = bus.publish("events", [(key, key.encode() * 3) for key in marks])
            firsts: dict[int, int] = {}
            for partition, offset in acks:
                firsts.setdefault(partition, offset)
            assert firsts == {p: ends_before[p] for p in firsts}
            acknowledged.update(zip(acks, marks, strict=True))
    with EmbeddedEventBus(tmp_path, partitions=PARTITIONS) as bus:
        per_partition: dict[int, list[int]] = {}
        for record in read_all(bus):
            per_partition.setdefault(record.partition, []).append(record.offset)
        for offsets in per_partition.values():
            assert offsets == list(range(len(offsets)))


def test_a_reader_process_sees_every_record_once_in_order_while_the_writer_appends(
    tmp_path: Path,
) -> None:
    total = 4000
    expected: dict[tuple[int, int], str] = {}
    rng = random.Random(7)
    with (
        start(READER, tmp_path, total) as reader,
        EmbeddedEventBus(tmp_path, partitions=PARTITIONS, segment_bytes=4096) as bus,
    ):
        assert reader.stdout is not None
        assert reader.stdout.readline() == "ready\n"
        sent = 0
        while sent < total:
            size = min(total - sent, rng.randint(1, 60))
            keys = [f"k{sent + i}" for i in range(size)]
            acks = bus.publish("events", [(key, b"v") for key in keys])
            expected.update(zip(acks, keys, strict=True))
            sent += size
        output, _ = reader.communicate(timeout=30)
    assert reader.returncode == 0
    seen: dict[int, list[int]] = {}
    for line in output.splitlines():
        partition, offset, key = line.split()
        assert expected[int(partition), int(offset)] == key
        seen.setdefault(int(partition), []).append(int(offset))
    assert sum(map(len, seen.values())) == total
    for offsets in seen.values():
        assert offsets == list(range(len(offsets)))


def test_a_second_writer_process_is_refused(tmp_path: Path) -> None:
    with start(HOLDER, tmp_path) as holder, EmbeddedEventBus(tmp_path, PARTITIONS) as bus:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline() == "ready\n"
        with pytest.raises(BusError, match=rf"already has a writer \(pid {holder.pid}\)"):
            bus.publish("events", [("k", b"v")])
        assert sum(bus.end_offsets("events").values()) == 1  # reading is fine meanwhile
        # Another topic has its own writer: the processor writes dead letters meanwhile.
        assert bus.publish("dead-letter", [("k", b"v")]) == [(bus.partition_for("k"), 0)]
        holder.stdin.close()
        holder.wait(timeout=10)
        assert bus.publish("events", [("k", b"v")])  # the lock went with the process
