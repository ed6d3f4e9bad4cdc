"""Ask the processor, which holds the engine, and wait for its answer.

Requests go through the state store's request channel (``submit`` / ``response``). The
processor answers between batches; an answer may be ``{"error": {"status", "code",
"message"?, "details"?}}``, which becomes the same error here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from starlette.concurrency import run_in_threadpool

from audience_manager.api.errors import ApiError
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

    async def ask(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        retry_not_found: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The processor's answer to a ``kind`` request; its error answers are raised."""
        started = time.monotonic()
        deadline = started + (self.timeout if timeout is None else timeout)
        body = msgspec.json.encode(payload)
        while True:
            request_id = await run_in_threadpool(self.store.submit, kind, body)
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
