"""Races on one catalog, run by the SQLite and the PostgreSQL suites alike."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine

from audience_manager.catalog import CatalogError, CatalogService, SegmentCreate

SEED: dict[str, Any] = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
T = TypeVar("T")


def together(calls: list[Callable[[], T]]) -> list[T | CatalogError]:
    """Run ``calls`` on their own threads, released at once; errors are returned."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | CatalogError:
        barrier.wait()
        try:
            return call()
        except CatalogError as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def revisions_are_distinct_and_none_is_missed(engine: Engine) -> None:
    writers = [CatalogService(engine) for _ in range(4)]
    reader = CatalogService(engine)
    seen: set[str] = set()
    revision = 0
    done = threading.Event()

    def follow() -> None:
        # Polls like a processor does; the pause keeps this thread from starving the
        # writers of the interpreter lock while they hold the database's.
        nonlocal revision
        finished = False
        while not finished:
            finished = done.wait(0.002)
            changes = reader.changes_since(revision)
            seen.update(s.id for s in changes.segments)
            revision = changes.revision

    follower = threading.Thread(target=follow)
    follower.start()

    def write(service: CatalogService, worker: int) -> list[str]:
        return [
            service.create_segment(SegmentCreate(name=f"w{worker}-{i}", rules=SEED)).id
            for i in range(15)
        ]

    results = together([partial(write, s, w) for w, s in enumerate(writers)])
    done.set()
    follower.join()
    created = {id_ for result in results if isinstance(result, list) for id_ in result}
    assert len(created) == 60
    assert seen == created
    assert reader.current_revision() == revision == 60


def replaces_cannot_close_a_cycle(engine: Engine) -> None:
    catalog = CatalogService(engine)
    a = catalog.create_segment(SegmentCreate(name="A", rules=SEED))
    b = catalog.create_segment(SegmentCreate(name="B", rules=SEED))

    def point(source: str, target: str) -> Callable[[], object]:
        rules = {"conditions": [{"segment": target}]}
        return lambda: CatalogService(engine).replace_segment(
            source, SegmentCreate(name=source, rules=rules)
        )

    for _ in range(5):
        outcomes = together([point("A", "B"), point("B", "A")])
        failures = [o for o in outcomes if isinstance(o, CatalogError)]
        assert len(failures) == 1, outcomes
        assert "cycle" in str(failures[0])
        # Undo, for the next round.
        for segment in (a, b):
            catalog.replace_segment(segment.id, SegmentCreate(name=segment.name, rules=SEED))


def creates_of_one_name_leave_one_segment(engine: Engine) -> None:
    outcomes = together(
        [
            lambda: CatalogService(engine).create_segment(SegmentCreate(name="Same", rules=SEED))
            for _ in range(4)
        ]
    )
    assert sum(not isinstance(o, CatalogError) for o in outcomes) == 1
    assert len(CatalogService(engine).list_segments().items) == 1
