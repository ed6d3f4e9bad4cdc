"""Group commit: requests that arrive while a publish runs share the next one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from audience_manager.api.ingestion.publisher import Publisher
from audience_manager.bus.base import BusUnavailable
from audience_manager.bus.embedded import EmbeddedEventBus

TOPIC = "events"


class GatedBus(EmbeddedEventBus):
    """The embedded log, but each publish waits until the test opens the gate."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, partitions=4)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.calls: list[list[tuple[str, bytes]]] = []

    def publish(self, topic: str, records: Sequence[tuple[str, bytes]]) -> list[tuple[int, int]]:
        self.calls.append(list(records))
        self.entered.release()
        self.gate.wait(timeout=10)
        return super().publish(topic, records)


def records(name: str, count: int = 1) -> list[tuple[str, bytes]]:
    return [(name, f"{name}-{i}".encode()) for i in range(count)]


async def entered(bus: GatedBus) -> None:
    """Until a publish call has started (and is held at the gate)."""
    assert await asyncio.to_thread(bus.entered.acquire, True, 10)


def test_requests_arriving_during_a_publish_share_the_next(tmp_path: Path) -> None:
    bus = GatedBus(tmp_path)

    async def scenario() -> None:
        publisher = Publisher(bus, TOPIC)
        publisher.start()
        first = asyncio.create_task(publisher.publish(records("a")))
        await entered(bus)  # "a" is being published, held at the gate
        rest = [asyncio.create_task(publisher.publish(records(f"r{i}", 2))) for i in range(50)]
        await asyncio.sleep(0)
        assert not first.done()
        bus.gate.set()
        await asyncio.gather(first, *rest)
        await publisher.close()
        assert (publisher.calls, publisher.records) == (2, 101)

    asyncio.run(scenario())
    assert [len(call) for call in bus.calls] == [1, 100]
    assert bus.calls[1] == [r for i in range(50) for r in records(f"r{i}", 2)]
    assert sum(bus.end_offsets(TOPIC).values()) == 101
    bus.close()


def test_a_request_hears_back_only_after_its_publish_returned(tmp_path: Path) -> None:
    bus = GatedBus(tmp_path)

    async def scenario() -> None:
        publisher = Publisher(bus, TOPIC)
        publisher.start()
        task = asyncio.create_task(publisher.publish(records("a", 3)))
        await entered(bus)
        await asyncio.sleep(0.05)
        assert not task.done()
        assert sum(bus.end_offsets(TOPIC).values()) == 0
        bus.gate.set()
        await task
        assert sum(bus.end_offsets(TOPIC).values()) == 3
        await publisher.close()

    asyncio.run(scenario())
    bus.close()


def test_groups_are_capped_but_a_request_is_never_split(tmp_path: Path) -> None:
    bus = GatedBus(tmp_path)

    async def scenario() -> None:
        publisher = Publisher(bus, TOPIC, max_records=10)
        publisher.start()
        first = asyncio.create_task(publisher.publish(records("a")))
        await entered(bus)
        sizes = [4, 4, 4, 25, 3]
        rest = [
            asyncio.create_task(publisher.publish(records(f"r{i}", n))) for i, n in enumerate(sizes)
        ]
        await asyncio.sleep(0)
        bus.gate.set()
        await asyncio.gather(first, *rest)
        await publisher.close()

    asyncio.run(scenario())
    assert [len(call) for call in bus.calls] == [1, 8, 4, 25, 3]
    bus.close()


def test_a_log_failure_reaches_every_waiting_request(tmp_path: Path) -> None:
    bus = GatedBus(tmp_path)
    bus.gate.set()

    async def scenario() -> None:
        publisher = Publisher(bus, TOPIC)
        publisher.start()
        await publisher.publish(records("before"))
        bus.close()  # a real failure: the log is gone from under the publisher
        results = await asyncio.gather(
            *(publisher.publish(records(f"r{i}")) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(result, BusUnavailable) for result in results)
        assert "closed" in str(results[0])
        assert publisher.failed_recently() is not None
        assert publisher.failed_recently(seconds=-1) is None
        await publisher.close()

    asyncio.run(scenario())


def test_close_publishes_what_is_queued_then_refuses(tmp_path: Path) -> None:
    bus = GatedBus(tmp_path)

    async def scenario() -> None:
        publisher = Publisher(bus, TOPIC)
        publisher.start()
        pending = [asyncio.create_task(publisher.publish(records(f"r{i}"))) for i in range(3)]
        await entered(bus)
        assert publisher.accepting
        closing = asyncio.create_task(publisher.close())
        await asyncio.sleep(0)
        assert not publisher.accepting
        bus.gate.set()
        await closing
        assert all(task.done() and task.exception() is None for task in pending)
        with pytest.raises(BusUnavailable, match="not accepting"):
            await publisher.publish(records("late"))

    asyncio.run(scenario())
    assert sum(bus.end_offsets(TOPIC).values()) == 3
    bus.close()


def test_a_publisher_that_was_not_started_refuses() -> None:
    async def scenario() -> None:
        publisher = Publisher(EmbeddedEventBus.__new__(EmbeddedEventBus), TOPIC)
        assert not publisher.accepting
        with pytest.raises(BusUnavailable):
            await publisher.publish(records("a"))

    asyncio.run(scenario())


def test_records_the_log_refuses_fail_their_own_request(tmp_path: Path) -> None:
    bus = GatedBus(tmp_path)
    bus.gate.set()

    async def scenario() -> None:
        publisher = Publisher(bus, TOPIC)
        publisher.start()
        with pytest.raises(TypeError):
            await publisher.publish([("u", "not bytes")])  # type: ignore[list-item]
        await publisher.publish(records("fine"))
        assert publisher.failed_recently() is None
        await publisher.close()

    asyncio.run(scenario())
    assert sum(bus.end_offsets(TOPIC).values()) == 1
    bus.close()
