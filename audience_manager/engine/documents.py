"""Profiles as stored records and as documents, built for many users at once.

The processor stores a profile as a compact :class:`ProfileRecord` (a JSON array: traits,
attribute values, first and last seen as epoch milliseconds); readers turn it into the
document the API serves with :func:`decode_profile`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any, cast

import msgspec
import numpy as np
import numpy.typing as npt

from audience_manager.rules.values import ValueVector

if TYPE_CHECKING:
    from audience_manager.engine.engine import Engine

__all__ = [
    "ProfileRecord",
    "decode_profile",
    "encode_profile",
    "encode_profiles",
    "encoded_rows",
    "iso_times",
    "profile_document",
    "profile_documents",
    "profile_records",
    "row_records",
]


class ProfileRecord(msgspec.Struct, array_like=True, gc=False):
    """A profile as the state store keeps it."""

    traits: dict[str, Any]
    attributes: dict[str, Any]
    first_seen: int | None
    last_seen: int | None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ProfileRecord)


def encode_profile(record: ProfileRecord) -> bytes:
    return _encoder.encode(record)


def decode_profile(user_id: str, stored: bytes) -> dict[str, Any]:
    """The API document of a stored profile record."""
    return profile_document(user_id, _decoder.decode(stored))


def profile_document(user_id: str, record: ProfileRecord) -> dict[str, Any]:
    return {
        "userId": user_id,
        "traits": record.traits,
        "attributes": record.attributes,
        "firstSeen": _iso(record.first_seen),
        "lastSeen": _iso(record.last_seen),
    }


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return f"{np.datetime_as_string(np.datetime64(ms, 'ms'), unit='ms')}Z"


def profile_records(engine: Engine, user_ids: Sequence[str]) -> list[ProfileRecord | None]:
    """Profile records of many users (None for unknown ones), in bulk."""
    dense = engine.ids.get_many(user_ids)
    known = [i for i, d in enumerate(dense) if d is not None]
    out: list[ProfileRecord | None] = [None] * len(user_ids)
    if not known:
        return out
    rows = np.asarray([dense[i] for i in known], dtype=np.int64)
    for i, record in zip(known, row_records(engine, rows), strict=True):
        out[i] = record
    return out


def row_records(engine: Engine, rows: npt.NDArray[np.int64]) -> list[ProfileRecord]:
    """Profile records of the users at engine ``rows`` (all of them known), in bulk."""
    names, columns, traits, first, last = _row_columns(engine, rows)
    if names:
        attributes = list(map(dict, map(zip, repeat(names), zip(*columns, strict=True))))
    else:
        attributes = [{} for _ in range(len(rows))]
    return list(map(ProfileRecord, traits, attributes, first, last))


def encoded_rows(engine: Engine, rows: npt.NDArray[np.int64]) -> list[bytes]:
    """``encode_profile`` of the records of the users at engine ``rows``, without making
    the records: each user's attributes become a struct encoding as their dict does."""
    if not len(rows):
        return []
    names, columns, traits, first, last = _row_columns(engine, rows)
    attributes = list(map(_attributes_type(tuple(names)), *columns)) if names else repeat({})
    lines = _encoder.encode_lines(list(map(_Encoded, traits, attributes, first, last)))
    return lines.split(b"\n")[:-1]  # JSON holds no raw newline


class _Encoded(msgspec.Struct, array_like=True, gc=False):
    """Encodes as :class:`ProfileRecord` does, attributes being a struct."""

    traits: dict[str, Any]
    attributes: Any
    first_seen: int | None
    last_seen: int | None


@functools.lru_cache(maxsize=32)
def _attributes_type(names: tuple[str, ...]) -> type[msgspec.Struct]:
    """A struct type encoding as ``dict(zip(names, values))`` does (fields in order)."""
    fields = [f"a{i}" for i in range(len(names))]
    return msgspec.defstruct(
        "Attributes", fields, rename=dict(zip(fields, names, strict=True)), gc=False
    )


def _row_columns(
    engine: Engine, rows: npt.NDArray[np.int64]
) -> tuple[list[str], list[list[Any]], list[dict[str, Any]], list[int | None], list[int | None]]:
    """Attribute names and their value columns, traits, first and last seen of ``rows``."""
    names = list(engine.attributes)
    columns = [engine.attribute_aggregate(name).vector(rows).values() for name in names]
    traits: list[dict[str, Any]] = [{} for _ in range(len(rows))]
    for key, column in engine.table.traits.items():
        present = np.flatnonzero(column.kind[rows[rows < len(column.kind)]] != 0)
        if len(present):
            values = column.gather(rows[present]).values()
            for position, value in zip(present.tolist(), values, strict=True):
                traits[position][key] = value
    first = _epoch_ms(engine.table.times("firstSeen", rows))
    last = _epoch_ms(engine.table.times("lastSeen", rows))
    return names, columns, traits, first, last


def encode_profiles(records: list[ProfileRecord]) -> list[bytes]:
    """``encode_profile`` of each record, encoded in one call (JSON has no raw newlines)."""
    if not records:
        return []
    return _encoder.encode_lines(records).split(b"\n")[:-1]


def profile_documents(engine: Engine, user_ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """Profile documents of many users (None for unknown ones), without segments."""
    return [
        None if record is None else profile_document(user_id, record)
        for user_id, record in zip(user_ids, profile_records(engine, user_ids), strict=True)
    ]


def _epoch_ms(times: ValueVector) -> list[int | None]:
    present = times.kind != 0
    ms = np.where(present, times.num, 0.0).astype(np.int64)
    if present.all():
        return cast("list[int | None]", ms.tolist())
    out = ms.astype(object)
    out[~present] = None
    return cast("list[int | None]", out.tolist())


def iso_times(times: ValueVector) -> list[str | None]:
    """ISO-8601 (UTC, milliseconds, ``Z``) of a vector of instants, in bulk."""
    present = times.kind != 0
    ms = np.where(present, times.num, 0.0).astype(np.int64)
    stamps = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms").tolist()
    return [f"{s}Z" if ok else None for s, ok in zip(stamps, present.tolist(), strict=True)]
