"""Ask the processor, which holds the engine, and wait for its answer.

Requests go through the state store's request channel (``submit`` / ``response``). The
processor answers between batches; an answer may be ``{"error": {"status", "code",
"message"?, "details"?}}``, which becomes the same error here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from starlette.concurrency import run_in_threadpool

from audience_manager.api.errors import ApiError
from audience_manager.bus.base import EventBus
from audience_manager.store import StateStore

__all__ = ["ProcessorClient", "ProcessorNotAnswering"]


class ProcessorNotAnswering(Exception):
    """The processor did not answer in time (it is down or far behind): a 503."""


@dataclass(frozen=True, slots=True)
class ProcessorClient:
    """Submits requests and polls for their answers.

    ``timeout`` bounds the whole wait. A 404 answer about something the caller has just
    checked exists usually means the processor has not loaded the latest catalog yet; with
    ``retry_not_found`` such a request is asked again for up to ``settle`` seconds.
    """

    store: StateStore
    timeout: float = 10.0
    interval: float = 0.01
    settle: float = 2.0
    #: The event log, when processors share its partitions: a request then goes to the
    #: processor holding the partition it is about (or one to each partition).
    bus: EventBus | None = None

    @property
    def partitions(self) -> int | None:
        """How many partitions answer separately (None: one processor answers all)."""
        return self.bus.partitions if self.bus is not None and self.bus.shares_partitions else None

    def partition_of(self, user_id: str) -> int | None:
        """The partition a request about ``user_id`` goes to (None: not addressed)."""
        return (
            None if self.partitions is None or self.bus is None else self.bus.partition_for(user_id)
        )

    async def ask_all(
        self,
        kind: str,
        payload: Callable[[int | None], dict[str, Any]],
        *,
        retry_not_found: bool = False,
    ) -> list[dict[str, Any]]:
        """The answers about every partition: one request, or one per partition (made by
        ``payload(partition)``) asked at once when processors share the partitions."""
        if self.partitions is None:
            return [await self.ask(kind, payload(None), retry_not_found=retry_not_found)]
        answers: dict[int, dict[str, Any]] = {}

        async def one(partition: int) -> None:
            answers[partition] = await self.ask(
                kind, payload(partition), partition=partition, retry_not_found=retry_not_found
            )

        async with anyio.create_task_group() as group:
            for partition in range(self.partitions):
                group.start_soon(one, partition)
        return [answers[p] for p in sorted(answers)]

    async def ask(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        partition: int | None = None,
        retry_not_found: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The processor's answer to a ``kind`` request (addressed to ``partition`` when
        processors share the partitions); its error answers are raised."""
        started = time.monotonic()
        deadline = started + (self.timeout if timeout is None else timeout)
        if self.partitions is not None and partition is not None:
            payload = {**payload, "partition": partition}
        else:
            partition = None
        body = msgspec.json.encode(payload)
        while True:
            request_id = await run_in_threadpool(self.store.submit, kind, body, partition)
            answer = await self._wait(request_id, deadline)
            error = answer.get("error")
            if not isinstance(error, dict):
                return answer
            status = int(error.get("status", 422))
            retry = retry_not_found and status == 404
            if retry and time.monotonic() - started < min(self.settle, self.timeout):
                await anyio.sleep(max(self.interval, 0.05))
                continue
            raise ApiError(
                status,
                str(error.get("code", "processor_error")),
                str(error.get("message") or "the processor refused the request"),
                list(error.get("details") or []),
            )

    async def _wait(self, request_id: str, deadline: float) -> dict[str, Any]:
        while True:
            raw = await run_in_threadpool(self.store.response, request_id)
            if raw is not None:
                answer: dict[str, Any] = msgspec.json.decode(raw)
                return answer
            if time.monotonic() >= deadline:
                raise ProcessorNotAnswering(f"no answer to request {request_id}")
            await anyio.sleep(self.interval)
