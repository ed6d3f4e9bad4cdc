"""Profiles as documents (what readers store and serve), built for many users at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from audience_manager.rules.values import ValueVector

if TYPE_CHECKING:
    from audience_manager.engine.engine import Engine

__all__ = ["iso_times", "profile_documents"]


def profile_documents(engine: Engine, user_ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """Profiles of many users (None for unknown ones), without segments, in bulk."""
    dense = [engine.ids.get(u) for u in user_ids]
    known = [i for i, d in enumerate(dense) if d is not None]
    out: list[dict[str, Any] | None] = [None] * len(user_ids)
    if not known:
        return out
    rows = np.asarray([dense[i] for i in known], dtype=np.int64)
    attributes = {
        name: engine.attribute_aggregate(name).vector(rows).values() for name in engine.attributes
    }
    traits: list[dict[str, Any]] = [{} for _ in known]
    for key, column in engine.table.traits.items():
        present = np.flatnonzero(column.kind[rows[rows < len(column.kind)]] != 0)
        if len(present):
            values = column.gather(rows[present]).values()
            for position, value in zip(present.tolist(), values, strict=True):
                traits[position][key] = value
    first = iso_times(engine.table.times("firstSeen", rows))
    last = iso_times(engine.table.times("lastSeen", rows))
    for j, i in enumerate(known):
        out[i] = {
            "userId": user_ids[i],
            "traits": traits[j],
            "attributes": {name: values[j] for name, values in attributes.items()},
            "firstSeen": first[j],
            "lastSeen": last[j],
        }
    return out


def iso_times(times: ValueVector) -> list[str | None]:
    """ISO-8601 (UTC, milliseconds, ``Z``) of a vector of instants, in bulk."""
    present = times.kind != 0
    ms = np.where(present, times.num, 0.0).astype(np.int64)
    stamps = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms").tolist()
    return [f"{s}Z" if ok else None for s, ok in zip(stamps, present.tolist(), strict=True)]
