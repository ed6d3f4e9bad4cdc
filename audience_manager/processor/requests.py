"""Requests the APIs hand to the processor, which holds the engine.

``preview``, ``explain``, ``members`` (STATIC uploads) and ``erase``, which waits until
the processor has applied every event accepted before it on the user's partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from audience_manager.engine import Engine, Event
from audience_manager.processor.projection import build_commit
from audience_manager.rules.errors import RuleValidationError
from audience_manager.rules.model import parse_rules
from audience_manager.store import StateStore

__all__ = ["answer_requests"]

History = Callable[[], Iterable[Sequence[Event]]]


def answer_requests(
    engine: Engine, store: StateStore, positions: Mapping[int, int], history: History
) -> bool:
    """Answer every pending request that is due; True when one changed state outside the
    event log (static members, erasures)."""
    changed = False
    for request_id, kind, payload in store.pending():
        try:
            body = msgspec.json.decode(payload)
            if kind == "erase" and positions.get(int(body["partition"]), 0) < int(body["after"]):
                continue  # the user's earlier events are not all applied yet
            changed |= kind in ("members", "erase")
            answer = _answer(engine, store, positions, history, kind, body)
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
    engine: Engine,
    store: StateStore,
    positions: Mapping[int, int],
    history: History,
    kind: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    if kind == "preview":
        rules = parse_rules(body["rules"])
        size, sample = engine.preview(rules, int(body.get("sample", 10)), history=history())
        return {"size": size, "sample": sample}
    if kind == "explain":
        return engine.explain(body["userId"], body["segmentId"]).to_json()
    if kind == "erase":
        user_id = body["userId"]
        dense = engine.ids.get(user_id)
        if dense is None:
            return {"erased": False}
        changes = engine.delete_user(user_id)
        store.commit(build_commit(engine, positions, changes, (), erased=[(dense, user_id)]))
        return {"erased": True}
    if kind == "members":
        segment_id = body["segmentId"]
        changes = engine.set_static_members(segment_id, body["userIds"], body["mode"])
        store.commit(build_commit(engine, positions, changes, ()))
        return {"size": engine.membership.size(segment_id)}
    raise ValueError(f"unknown request kind {kind!r}")
