"""The embedded log's files: recovery of torn tails, failed writes, retention, limits."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from audience_manager.bus import BusError, BusUnavailable, OffsetOutOfRange, Record
from audience_manager.bus import _writer as writer_module
from audience_manager.bus._segments import encode_frames, list_segments, segment_path
from audience_manager.bus.embedded import EmbeddedEventBus

DAY_MS = 24 * 3600 * 1000


def read_partition(bus: EmbeddedEventBus, topic: str, partition: int) -> list[Record]:
    """Every retained record of one partition, with a fresh consumer."""
    end = bus.end_offsets(topic)[partition]
    with bus.consumer(topic, "check") as consumer:
        consumer.assign([partition])
        records: list[Record] = []
        while not records or records[-1].offset < end - 1:
            batch = consumer.poll(timeout=2.0)
            assert batch, f"stuck after {len(records)} records"
            records.extend(batch)
    return records


def last_segment(directory: Path, topic: str = "t", partition: int = 0) -> Path:
    partition_dir = directory / topic / str(partition)
    return segment_path(partition_dir, list_segments(partition_dir)[-1])


def values(records: list[Record]) -> list[bytes]:
    return [record.value for record in records]


def publish_each(bus: EmbeddedEventBus, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        bus.publish("t", [("k", b"v%d" % i)])


def test_a_tail_cut_mid_record_is_dropped_and_offsets_continue(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        publish_each(bus, 10)
    segment = last_segment(tmp_path)
    os.truncate(segment, segment.stat().st_size - 5)
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        assert bus.publish("t", [("k", b"after")]) == [(0, 9)]
        records = read_partition(bus, "t", 0)
    assert values(records) == [b"v%d" % i for i in range(9)] + [b"after"]


def test_garbage_after_the_last_record_is_dropped(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        publish_each(bus, 3)
    with open(last_segment(tmp_path), "ab") as file:
        file.write(os.urandom(100))
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        assert bus.publish("t", [("k", b"after")]) == [(0, 3)]
        assert values(read_partition(bus, "t", 0)) == [b"v0", b"v1", b"v2", b"after"]


def append_unpublished_record(directory: Path, offset: int) -> None:
    """What a writer killed between writing a record and publishing it leaves behind."""
    with open(last_segment(directory), "ab") as file:
        file.write(encode_frames([b"k"], [b"unpublished"], offset, 0))


def test_records_past_the_published_end_are_invisible_then_cut(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        publish_each(bus, 2)
    append_unpublished_record(tmp_path, 2)
    with EmbeddedEventBus(tmp_path, partitions=1) as reader:
        assert reader.end_offsets("t") == {0: 2}
        assert values(read_partition(reader, "t", 0)) == [b"v0", b"v1"]
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        assert bus.publish("t", [("k", b"after")]) == [(0, 2)]
        assert values(read_partition(bus, "t", 0)) == [b"v0", b"v1", b"after"]


def test_without_trusted_ends_every_complete_record_is_kept(tmp_path: Path) -> None:
    # After a reboot the ends file may be older than the fsynced data: recovery then keeps
    # every complete record. A missing ends file stands for that case.
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        publish_each(bus, 2)
    append_unpublished_record(tmp_path, 2)
    (tmp_path / "t" / ".ends").unlink()
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        assert bus.publish("t", [("k", b"after")]) == [(0, 3)]
        assert values(read_partition(bus, "t", 0)) == [b"v0", b"v1", b"unpublished", b"after"]


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedEventBus(tmp_path, partitions=4) as bus:
        bus.publish("t", [(f"u{i}", b"before") for i in range(20)])
        ends = bus.end_offsets("t")
        real_write = writer_module._write_all
        calls = []

        def write_then_fail(fd: int, data: bytes) -> None:
            calls.append(fd)
            if len(calls) == 3:
                real_write(fd, data[: len(data) // 2])  # a partial write, then the disk fills
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(fd, data)

        monkeypatch.setattr(writer_module, "_write_all", write_then_fail)
        with pytest.raises(BusUnavailable, match="No space left"):
            bus.publish("t", [(f"u{i}", b"failed") for i in range(20)])
        assert bus.end_offsets("t") == ends
        monkeypatch.undo()
        acks = bus.publish("t", [(f"u{i}", b"after") for i in range(20)])
        assert {p: min(o for q, o in acks if q == p) for p, _ in acks} == {
            p: ends[p] for p, _ in acks
        }
        for partition in range(4):
            assert b"failed" not in values(read_partition(bus, "t", partition))


def test_after_a_failed_fsync_the_bus_refuses_writes_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        publish_each(bus, 2)

        def failing_fsync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(BusUnavailable, match="durable"):
            bus.publish("t", [("k", b"lost")])
        monkeypatch.undo()
        with pytest.raises(BusUnavailable):
            bus.publish("t", [("k", b"refused")])
        assert bus.end_offsets("t") == {0: 2}
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        assert bus.publish("t", [("k", b"after")]) == [(0, 2)]
        assert values(read_partition(bus, "t", 0)) == [b"v0", b"v1", b"after"]


@pytest.mark.parametrize("failing", [0, 2], ids=["the syncing thread's file", "a pool's file"])
def test_a_failed_fsync_of_any_partition_file_refuses_the_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    real_fsync = os.fsync
    calls: list[int] = []
    lock = threading.Lock()
    records = [(f"user{i}", b"lost") for i in range(40)]
    with EmbeddedEventBus(tmp_path, partitions=4) as bus:
        publish_each(bus, 2)
        before = bus.end_offsets("t")

        def fsync(fd: int) -> None:
            with lock:
                call = len(calls)
                calls.append(fd)
            if call == failing:
                raise OSError(errno.EIO, "Input/output error")
            time.sleep(0.01)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(BusUnavailable, match="durable"):
            bus.publish("t", records)
        monkeypatch.undo()
        assert len(calls) == 4  # every touched file was synced, or tried
        assert bus.end_offsets("t") == before
    with EmbeddedEventBus(tmp_path, partitions=4) as bus:
        assert bus.end_offsets("t") == before
        [(partition, offset)] = bus.publish("t", [("k", b"after")])
        assert offset == before[partition]


def test_concurrent_publishers_get_distinct_gapless_offsets(tmp_path: Path) -> None:
    acks: list[tuple[int, int]] = []
    lock = threading.Lock()
    with EmbeddedEventBus(tmp_path, partitions=3, segment_bytes=2048) as bus:

        def publish(worker: int) -> None:
            for batch in range(25):
                got = bus.publish("t", [(f"{worker}-{batch}-{i}", b"x") for i in range(8)])
                with lock:
                    acks.extend(got)

        threads = [threading.Thread(target=publish, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(acks)) == len(acks) == 8 * 25 * 8
        ends = bus.end_offsets("t")
        assert sorted(acks) == [(p, o) for p in range(3) for o in range(ends[p])]
        for partition in range(3):
            assert [r.offset for r in read_partition(bus, "t", partition)] == list(
                range(ends[partition])
            )


def test_segments_roll_and_a_seek_lands_in_the_right_one(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1, segment_bytes=300) as bus:
        publish_each(bus, 60)
        assert len(list_segments(tmp_path / "t" / "0")) > 5
        with bus.consumer("t", "g") as consumer:
            consumer.assign()
            consumer.seek({0: 37})
            got: list[Record] = []
            while len(got) < 23:
                got.extend(consumer.poll(max_records=5, timeout=1.0))
        assert values(got) == [b"v%d" % i for i in range(37, 60)]


def test_retention_deletes_only_old_segments_every_group_has_consumed(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1, segment_bytes=300) as bus:
        publish_each(bus, 60)
        partition_dir = tmp_path / "t" / "0"
        segments = list_segments(partition_dir)
        for base in segments:  # all of it written long ago
            old = time.time() - 30 * 24 * 3600
            os.utime(segment_path(partition_dir, base), (old, old))
        assert bus.delete_expired_segments("t") == 0  # no group has consumed anything
        with bus.consumer("t", "fast") as fast, bus.consumer("t", "slow") as slow:
            fast.assign()
            slow.assign()
            slow.commit({0: 0})
            fast.commit({0: 60})
            assert bus.delete_expired_segments("t") == 0  # "slow" has consumed nothing
            slow.commit({0: 25})
            deleted = bus.delete_expired_segments("t")
            beginning = bus.beginning_offsets("t")[0]
            assert deleted == segments.index(beginning) > 0
            assert beginning <= 25  # the segment holding offset 25 stays
            later = segments[segments.index(beginning) + 1]
            assert later > 25
            slow.seek({0: 0})
            with pytest.raises(OffsetOutOfRange):
                slow.poll(timeout=0)
        assert values(read_partition(bus, "t", 0)) == [b"v%d" % i for i in range(beginning, 60)]


def test_retention_keeps_recent_segments_and_runs_when_a_segment_rolls(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1, segment_bytes=300, retention_ms=DAY_MS) as bus:
        publish_each(bus, 30)
        with bus.consumer("t", "g") as consumer:
            consumer.assign()
            consumer.commit({0: 30})
        assert bus.delete_expired_segments("t") == 0  # consumed, but not a day old
    with EmbeddedEventBus(tmp_path, partitions=1, segment_bytes=300, retention_ms=0) as bus:
        publish_each(bus, 10, start=30)
        assert bus.beginning_offsets("t")[0] > 0
        assert bus.beginning_offsets("t")[0] <= 30


def test_fsync_off_still_round_trips_and_recovers(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=2, fsync=False) as bus:
        acks = bus.publish("t", [(f"k{i}", b"%d" % i) for i in range(50)])
        assert sorted(acks) == sorted(set(acks))
        with bus.consumer("t", "g") as consumer:
            consumer.assign()
            got: list[Record] = []
            while len(got) < 50:
                got.extend(consumer.poll(timeout=1.0))
            consumer.commit()
    with EmbeddedEventBus(tmp_path, partitions=2, fsync=False) as bus:
        ends = bus.end_offsets("t")
        assert sum(ends.values()) == 50
        acks = bus.publish("t", [("k0", b"next")])
        assert acks == [(acks[0][0], ends[acks[0][0]])]


def test_a_record_larger_than_a_read_comes_back_whole(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        bus.publish("t", [("a", b"small"), ("b", big), ("c", b"small")])
        assert values(read_partition(bus, "t", 0)) == [b"small", big, b"small"]


def test_limits_and_misuse_are_refused(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=2) as bus:
        with pytest.raises(ValueError, match="keys"):
            bus.publish("t", [("k" * 70_000, b"")])
        with pytest.raises(ValueError, match="topic"):
            bus.publish(".hidden", [("k", b"")])
        with pytest.raises(ValueError, match="group"):
            bus.consumer("t", "a/b")
        bus.publish("t", [("k", b"v")])
    for partitions in (1, 3):
        with EmbeddedEventBus(tmp_path, partitions=partitions) as other:
            with pytest.raises(BusError, match="partitions"):
                other.end_offsets("t")
            with pytest.raises(BusError, match="partitions"):
                other.publish("t", [("k", b"v")])
            consumer = other.consumer("t", "g")
            consumer.assign()
            with pytest.raises(BusError, match="partitions"):
                consumer.poll(timeout=0)
    bus = EmbeddedEventBus(tmp_path, partitions=2)
    consumer = bus.consumer("t", "g")
    bus.close()
    with pytest.raises(BusError, match="closed"):
        bus.publish("t", [("k", b"v")])
    with pytest.raises(BusError, match="closed"):
        consumer.assign()


def test_two_buses_in_one_process_cannot_both_write(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path) as first, EmbeddedEventBus(tmp_path) as second:
        first.publish("t", [("k", b"v")])
        with pytest.raises(BusError, match="already has a writer"):
            second.publish("t", [("k", b"v")])


def test_concurrent_publishers_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1) as bus:
        bus.publish("t", [("k", b"warm up")])
        real_fsync = os.fsync
        rounds = []

        def slow_fsync(fd: int) -> None:
            rounds.append(fd)
            time.sleep(0.02)  # a slow disk, so that the 8 publishers overlap
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", slow_fsync)
        threads = [threading.Thread(target=publish_each, args=(bus, 10, 10 * w)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert bus.end_offsets("t") == {0: 81}
        # Unshared, 80 publishes would take 80 fsyncs; shared, the 8 threads mostly wait
        # for one round together (about 10-20 rounds, more on a loaded machine).
        assert len(rounds) < 80 * 3 / 4


def test_after_a_reboot_records_past_a_gap_between_segments_are_dropped(tmp_path: Path) -> None:
    with EmbeddedEventBus(tmp_path, partitions=1, segment_bytes=100) as bus:
        publish_each(bus, 12)
    partition_dir = tmp_path / "t" / "0"
    bases = list_segments(partition_dir)
    assert len(bases) >= 3
    # The power went out: the tail of the second-to-last segment never reached the disk.
    torn = segment_path(partition_dir, bases[-2])
    os.truncate(torn, torn.stat().st_size - 3)
    (tmp_path / "t" / ".ends").unlink()
    with EmbeddedEventBus(tmp_path, partitions=1, segment_bytes=100) as bus:
        assert bus.publish("t", [("k", b"after")]) == [(0, bases[-1] - 1)]
        records = read_partition(bus, "t", 0)
    assert values(records) == [b"v%d" % i for i in range(bases[-1] - 1)] + [b"after"]
