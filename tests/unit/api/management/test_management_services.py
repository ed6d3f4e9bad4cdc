"""Services over a real SQLite catalog and state store: member pages and exports, STATIC
uploads through the request channel, audience paths, and waiting for the processor."""

import csv
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import msgspec
import pytest
from conftest import Writer

from audience_manager.api.errors import ApiError
from audience_manager.api.management.audiences.service import (
    AudienceService,
    expression_of,
    segment_leaves,
)
from audience_manager.api.management.membership_cache import MembershipCache
from audience_manager.api.management.processor_client import (
    ProcessorClient,
    ProcessorNotAnswering,
)
from audience_manager.api.management.segments.members import MemberService
from audience_manager.catalog import CatalogService
from audience_manager.catalog.errors import InvalidInput
from audience_manager.catalog.schemas import SegmentCreate
from audience_manager.membership import AudienceError
from audience_manager.store import EmbeddedStateStore, ProfileWrite, StateCommit

RULES = {"conditions": [{"field": "totalSpent", "operator": "gt", "value": 1000}]}
Answer = Callable[[str, dict[str, Any]], dict[str, Any]]


@pytest.fixture
def responder(store: EmbeddedStateStore) -> Iterator[Callable[[Answer], None]]:
    """Answer the request channel like the processor would, with a given function."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(answer: Answer) -> None:
        def loop() -> None:
            while not stop.wait(0.005):
                for request_id, kind, payload in store.pending():
                    reply = answer(kind, msgspec.json.decode(payload))
                    store.respond(request_id, msgspec.json.encode(reply))

        threads.append(threading.Thread(target=loop, daemon=True))
        threads[-1].start()

    yield start
    stop.set()
    for thread in threads:
        thread.join()


def test_member_pages_are_stable_and_cover_everyone_once(
    catalog: CatalogService, store: EmbeddedStateStore, writer: Writer
) -> None:
    segment = catalog.create_segment(SegmentCreate(name="S", type="STATIC"))
    writer.commit(enters={segment.id: range(25)})
    service = MemberService(catalog, store, ProcessorClient(store))
    seen: list[str] = []
    cursor = None
    while True:
        page = service.page(segment.id, 10, cursor)
        seen += page.members
        if page.next_cursor is None:
            break
        assert not page.next_cursor.isdigit()
        cursor = page.next_cursor
    assert seen == [f"u{d}" for d in range(25)]
    other = catalog.create_segment(SegmentCreate(name="T", type="STATIC"))
    with pytest.raises(InvalidInput):
        service.page(other.id, 10, service.page(segment.id, 10, None).next_cursor)


def test_exports_stream_every_member_as_csv_or_ndjson(
    catalog: CatalogService, store: EmbeddedStateStore
) -> None:
    segment = catalog.create_segment(SegmentCreate(name="S", type="STATIC"))
    names = ["plain", "with,comma", 'with "quotes"', "x" * 256]
    profiles = [ProfileWrite(d, name, b"{}") for d, name in enumerate(names)]
    store.commit(StateCommit({}, 0, profiles, enters={segment.id: [0, 1, 2, 3]}))
    service = MemberService(catalog, store, ProcessorClient(store))

    exported = service.export(segment.id, "csv")
    assert exported.filename == f"{segment.id}.csv"
    text = b"".join(exported.chunks).decode()
    assert list(csv.reader(io.StringIO(text))) == [["userId"], *([n] for n in names)]
    ndjson = b"".join(service.export(segment.name, "ndjson").chunks).decode()
    assert [json.loads(line) for line in ndjson.splitlines()] == [{"userId": n} for n in names]


def test_a_static_upload_is_answered_by_the_processor(
    catalog: CatalogService, store: EmbeddedStateStore, responder: Callable[[Answer], None]
) -> None:
    static = catalog.create_segment(SegmentCreate(name="S", type="STATIC"))
    dynamic = catalog.create_segment(SegmentCreate(name="D", rules=RULES))
    asked: list[dict[str, Any]] = []

    def answer(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        asked.append({"kind": kind, **body})
        return {"size": len(body["userIds"])}

    responder(answer)
    service = MemberService(catalog, store, ProcessorClient(store, timeout=5))
    assert anyio.run(service.upload, static.name, "replace", ["a", "b"]).size == 2
    assert asked == [
        {"kind": "members", "segmentId": static.id, "mode": "replace", "userIds": ["a", "b"]}
    ]
    with pytest.raises(ApiError) as raised:
        anyio.run(service.upload, dynamic.id, "add", ["a"])
    assert raised.value.status == 409


def test_error_answers_become_api_errors_and_not_found_is_asked_again(
    store: EmbeddedStateStore, responder: Callable[[Answer], None]
) -> None:
    attempts: list[str] = []

    def answer(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        attempts.append(kind)
        if kind == "explain" and len(attempts) < 3:
            return {"error": {"status": 404, "code": "not_found", "message": "unknown 'seg'"}}
        if kind == "preview":
            details = [{"path": "rules", "message": "bad"}]
            return {"error": {"status": 422, "code": "invalid_rules", "details": details}}
        return {"held": True}

    responder(answer)
    client = ProcessorClient(store, timeout=5)
    assert anyio.run(lambda: client.ask("explain", {}, retry_not_found=True)) == {"held": True}
    assert attempts == ["explain"] * 3
    with pytest.raises(ApiError) as raised:
        anyio.run(lambda: client.ask("preview", {}))
    assert (raised.value.status, raised.value.code) == (422, "invalid_rules")
    assert raised.value.details == [{"path": "rules", "message": "bad"}]


def test_no_answer_in_time_is_processor_not_answering(store: EmbeddedStateStore) -> None:
    client = ProcessorClient(store, timeout=0.1)
    with pytest.raises(ProcessorNotAnswering):
        anyio.run(lambda: client.ask("preview", {"rules": RULES}))


def test_segment_leaves_follow_the_parser_paths() -> None:
    raw = {"and": ["a", {"segment": "b"}, {"not": {"or": ["c", "d"]}}]}
    assert list(segment_leaves(raw)) == [
        ("expression.and[0]", "a"),
        ("expression.and[1].segment", "b"),
        ("expression.and[2].not.or[0]", "c"),
        ("expression.and[2].not.or[1]", "d"),
    ]
    assert expression_of({"expression": "a"}) == "a"
    assert expression_of({"or": ["a"]}) == {"or": ["a"]}


def test_unknown_segments_in_an_expression_are_named_by_path(
    catalog: CatalogService, store: EmbeddedStateStore, writer: Writer
) -> None:
    segment = catalog.create_segment(SegmentCreate(name="Known", type="STATIC"))
    writer.commit(enters={segment.id: [1, 2]}, profiles=[3])
    service = AudienceService(catalog, MembershipCache(store))
    assert service.count({"expression": {"not": "Known"}}).count == 1
    assert service.count({"or": [segment.id, "Known"]}).count == 2
    with pytest.raises(AudienceError) as raised:
        service.count({"and": ["Known", {"not": "Gone"}, "Gone"]})
    assert raised.value.issues == [
        ("expression.and[1].not", "unknown segment 'Gone'"),
        ("expression.and[2]", "unknown segment 'Gone'"),
    ]
    with pytest.raises(InvalidInput) as overlap:
        service.overlap(f"{segment.id},Gone")
    assert overlap.value.details == [{"path": "ids[1]", "message": "unknown segment 'Gone'"}]
