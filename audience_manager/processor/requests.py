"""Requests the APIs hand to the processor, which holds the engine.

``preview``, ``explain``, ``members`` (STATIC uploads) and ``erase``, which waits until
the processor has applied every event accepted before it on the user's partition. Where
processors share the partitions, requests are addressed to a partition and answered by
the task holding it (a preview per partition, which the API adds up).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import msgspec

from audience_manager.engine import Event
from audience_manager.processor.projection import build_commit
from audience_manager.processor.task import Task
from audience_manager.rules.errors import RuleValidationError
from audience_manager.rules.model import parse_rules
from audience_manager.store import StateCommit, StateStore

__all__ = ["answer_requests"]

History = Callable[["Task"], Iterable[Sequence[Event]]]


def answer_requests(
    store: StateStore,
    holder: Callable[[int | None], Task | None],
    history: History,
    partitions: Collection[int] | None = None,
) -> bool:
    """Answer every pending request that is due; True when one changed state outside the
    event log (static members, erasures).

    ``partitions`` are those the requests are addressed to (None: unaddressed requests);
    ``holder`` gives the task holding a request's partition, or None if it moved away.
    """
    changed = False
    for request_id, kind, payload in store.pending(partitions=partitions):
        try:
            body = msgspec.json.decode(payload)
            partition = body.get("partition")
            task = holder(None if partition is None else int(partition))
            if task is None:
                continue  # the partition went to another processor meanwhile
            if kind == "erase" and task.positions.get(int(body["partition"]), 0) < int(
                body["after"]
            ):
                continue  # the user's earlier events are not all applied yet
            changed |= kind in ("members", "erase")
            answer = _answer(task, store, history, kind, body)
        except RuleValidationError as exc:
            issues = [{"path": i.path, "message": i.message} for i in exc.issues]
            answer = {"error": {"status": 422, "code": "invalid_rules", "details": issues}}
        except KeyError as exc:
            answer = {"error": {"status": 404, "code": "not_found", "message": f"unknown {exc}"}}
        except (ValueError, msgspec.DecodeError) as exc:
            answer = {"error": {"status": 422, "code": "invalid_request", "message": str(exc)}}
        store.respond(request_id, msgspec.json.encode(answer))
    return changed


def _answer(
    task: Task, store: StateStore, history: History, kind: str, body: dict[str, Any]
) -> dict[str, Any]:
    engine, positions = task.engine, task.positions
    if kind == "preview":
        rules = parse_rules(body["rules"])
        size, sample = engine.preview(rules, int(body.get("sample", 10)), history=history(task))
        return {"size": size, "sample": sample}
    if kind == "explain":
        return engine.explain(body["userId"], body["segmentId"]).to_json()
    if kind == "erase":
        user_id = body["userId"]
        dense = engine.ids.get(user_id)
        if dense is None:
            return {"erased": False}
        changes = engine.delete_user(user_id)
        erased = [(task.space.to_store(dense), user_id)]
        store.commit(
            _fenced(build_commit(engine, positions, changes, (), erased, space=task.space))
        )
        return {"erased": True}
    if kind == "members":
        segment_id = body["segmentId"]
        changes = engine.set_static_members(segment_id, body["userIds"], body["mode"])
        store.commit(_fenced(build_commit(engine, positions, changes, (), space=task.space)))
        return {"size": engine.membership.size(segment_id)}
    raise ValueError(f"unknown request kind {kind!r}")


def _fenced(commit: StateCommit) -> StateCommit:
    """The commit, refused by the store if the task's partitions moved on without it."""
    commit.base = dict(commit.positions)
    return commit
