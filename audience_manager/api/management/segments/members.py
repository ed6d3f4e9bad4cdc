"""Members of a segment: pages, streamed exports, and uploads to STATIC segments."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from starlette.concurrency import run_in_threadpool

from audience_manager.api.errors import ApiError
from audience_manager.api.management.cursors import decode_member_cursor, encode_member_cursor
from audience_manager.api.management.processor_client import ProcessorClient
from audience_manager.api.management.segments.schemas import MemberCount, MemberPage
from audience_manager.catalog.service import CatalogService
from audience_manager.store import StateStore

__all__ = ["EXPORT_PAGE", "Export", "ExportFormat", "MemberService", "UploadMode"]

EXPORT_PAGE = 10_000
ExportFormat = Literal["csv", "ndjson"]
UploadMode = Literal["add", "remove", "replace"]

_MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}


@dataclass(frozen=True, slots=True)
class Export:
    """A streamed export: its chunks, media type and file name."""

    chunks: Iterator[bytes]
    media_type: str
    filename: str


class MemberService:
    """Reads members from the state store; STATIC uploads go through the processor,
    which owns membership."""

    def __init__(
        self, catalog: CatalogService, store: StateStore, processor: ProcessorClient
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._processor = processor

    def page(self, segment_id: str, limit: int, cursor: str | None) -> MemberPage:
        """Members in a stable order (dense id), ``limit`` after ``cursor``."""
        segment = self._catalog.get_segment(segment_id)
        after = None if cursor is None else decode_member_cursor(segment.id, cursor)
        members, last = self._store.members(segment.id, after, limit)
        following = None if last is None else encode_member_cursor(segment.id, last)
        return MemberPage(members=members, next_cursor=following)

    def export(self, segment_id: str, file_format: ExportFormat) -> Export:
        """Every member as CSV (header ``userId``) or NDJSON, read a page at a time.

        The segment is looked up now, so an unknown one fails before streaming starts.
        """
        segment = self._catalog.get_segment(segment_id)
        rows = _csv_rows if file_format == "csv" else _ndjson_rows
        chunks = rows(self._pages(segment.id))
        return Export(chunks, _MEDIA_TYPES[file_format], f"{segment.id}.{file_format}")

    async def upload(self, segment_id: str, mode: UploadMode, user_ids: list[str]) -> MemberCount:
        """Add, remove or replace the members of a STATIC segment; its size after."""
        segment = await run_in_threadpool(self._catalog.get_segment, segment_id)
        if segment.type != "STATIC":
            raise ApiError(
                409,
                "conflict",
                f"segment {segment.name!r} is {segment.type}: its members follow its rules",
            )
        # Where processors share the partitions, each gets the users of its own.
        by_partition: dict[int | None, list[str]] = {}
        for user_id in user_ids:
            by_partition.setdefault(self._processor.partition_of(user_id), []).append(user_id)

        def payload(partition: int | None) -> dict[str, Any]:
            ids = user_ids if partition is None else by_partition.get(partition, [])
            return {"segmentId": segment.id, "mode": mode, "userIds": ids}

        answers = await self._processor.ask_all("members", payload, retry_not_found=True)
        return MemberCount(size=sum(int(answer["size"]) for answer in answers))

    def _pages(self, segment_id: str) -> Iterator[list[str]]:
        after: int | None = None
        while True:
            members, after = self._store.members(segment_id, after, EXPORT_PAGE)
            if members:
                yield members
            if after is None:
                return


def _csv_rows(pages: Iterator[list[str]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["userId"])
    yield buffer.getvalue().encode()
    for members in pages:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([member] for member in members)
        yield buffer.getvalue().encode()


def _ndjson_rows(pages: Iterator[list[str]]) -> Iterator[bytes]:
    encode = msgspec.json.encode
    for members in pages:
        yield b"".join(encode({"userId": member}) + b"\n" for member in members)
