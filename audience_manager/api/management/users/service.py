"""Users: profiles, their segments, erasure and explanations."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from audience_manager.api.common import EVENTS_TOPIC
from audience_manager.api.errors import ApiError
from audience_manager.api.management.processor_client import (
    ProcessorClient,
    ProcessorNotAnswering,
)
from audience_manager.api.management.users.schemas import SegmentName, UserProfile, UserSegments
from audience_manager.bus.base import EventBus
from audience_manager.catalog.errors import NotFound
from audience_manager.catalog.service import CatalogService
from audience_manager.engine.documents import decode_profile
from audience_manager.store import StateStore

__all__ = ["UserService"]


class UserService:
    """Profiles are read from the state store; erasure is asked of the processor, which
    applies it after every event of the user accepted before it."""

    def __init__(
        self,
        catalog: CatalogService,
        store: StateStore,
        bus: EventBus,
        processor: ProcessorClient,
        *,
        erase_timeout: float = 10.0,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._bus = bus
        self._processor = processor
        self._erase_timeout = erase_timeout

    def profile(self, user_id: str) -> UserProfile:
        """A user's profile with the segments it is in; 404 for an unknown user."""
        doc = self._stored_profile(user_id)
        return UserProfile(
            user_id=user_id,
            traits=doc.get("traits") or {},
            attributes=doc.get("attributes") or {},
            segments=self._segments_of(user_id),
            first_seen=doc.get("firstSeen"),
            last_seen=doc.get("lastSeen"),
        )

    def segments(self, user_id: str) -> UserSegments:
        """The segments a user is in; 404 for an unknown user."""
        self._stored_profile(user_id)
        return UserSegments(user_id=user_id, segments=self._segments_of(user_id))

    async def erase(self, user_id: str) -> bool:
        """Erase everything about a user; True once applied, False if still on its way.

        The processor erases the user once it has applied every event of the user's
        partition accepted before this request (so nothing sent before survives; events
        sent after make a new profile). A user with no profile and nothing in flight on
        its partition is unknown (404).
        """
        partition = self._bus.partition_for(user_id)
        if await run_in_threadpool(self._unknown, user_id, partition):
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        end = await run_in_threadpool(self._bus.end_offsets, EVENTS_TOPIC)
        payload = {"userId": user_id, "partition": partition, "after": end.get(partition, 0)}
        try:
            await self._processor.ask(
                "erase", payload, partition=partition, timeout=self._erase_timeout
            )
        except ProcessorNotAnswering:
            return False
        return True

    async def explain(self, user_id: str, segment_id: str) -> dict[str, Any]:
        """Which of a segment's conditions hold for a user, with the values compared."""
        await run_in_threadpool(self._stored_profile, user_id)
        segment = await run_in_threadpool(self._catalog.get_segment, segment_id)
        payload = {"userId": user_id, "segmentId": segment.id}
        partition = self._processor.partition_of(user_id)
        return await self._processor.ask(
            "explain", payload, partition=partition, retry_not_found=True
        )

    def _stored_profile(self, user_id: str) -> dict[str, Any]:
        stored = self._store.profile(user_id)
        if stored is None:
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        return decode_profile(user_id, stored)

    def _segments_of(self, user_id: str) -> list[SegmentName]:
        named = []
        for segment_id in self._store.user_segments(user_id):
            try:
                segment = self._catalog.get_segment(segment_id)
            except NotFound:  # deleted a moment ago; the processor is dropping it
                continue
            named.append(SegmentName(id=segment.id, name=segment.name))
        return named

    def _unknown(self, user_id: str, partition: int) -> bool:
        # In this order: once everything accepted up to ``end`` is applied, a missing
        # profile means no event of this user was accepted before the request.
        end = self._bus.end_offsets(EVENTS_TOPIC).get(partition, 0)
        applied = self._store.positions().get(partition, 0)
        return applied >= end and self._store.profile(user_id) is None
