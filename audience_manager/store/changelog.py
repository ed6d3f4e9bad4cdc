"""How both stores encode a block of change-log lines.

A block is stored as a msgpack map. Each distinct (user id, dense id) of its lines is
written once, and each line is its index among them; segment, change and time are written
once per run of lines that share them (a batch's changes come as one run per segment and
change). A cold start's block takes about 4 bytes a line this way. Blocks of the earlier
forms still decode: a map with every column per line, and an array of lines (a map and an
array are told apart by their first byte).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
import numpy.typing as npt

from audience_manager.store.base import ChangeBlock, ChangeRecord, numbered_block

__all__ = ["decode_block", "encode_block", "read_blocks"]

#: Stored blocks fetched at a time while reading the log.
BLOCKS_PER_READ = 8

_Ints = npt.NDArray[np.int64]


class _Stored(msgspec.Struct, gc=False, omit_defaults=True):
    """A stored block; ``segments`` in either form, the other fields in one of them."""

    segments: list[str]
    # Each (user id, dense id) once; lines as indexes into them; runs of lines.
    names: list[str] | None = None
    ids: bytes = b""  # int64 per entry: its dense id
    entry: bytes = b""  # int32 per line: index into names and ids
    runs: bytes = b""  # int32 per run: its first line
    run_segment: bytes = b""  # int32 per run: index into segments
    run_kind: bytes = b""  # int8 per run: index into CHANGE_KINDS
    run_at: bytes = b""  # int64 per run
    # The earlier form: every column per line.
    segment: bytes = b""
    users: list[str] | None = None
    dense: bytes = b""
    kind: bytes = b""
    at: bytes = b""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Stored | list[ChangeRecord])


def encode_block(changes: ChangeBlock | list[ChangeRecord]) -> bytes:
    """The stored form of a block of lines."""
    block = changes if isinstance(changes, ChangeBlock) else ChangeBlock.of(changes)
    names, ids, entry = _entries(block)
    starts = _run_starts(block)
    return _encoder.encode(
        _Stored(
            block.segments,
            names=names,
            ids=ids.astype("<i8").tobytes(),
            entry=entry.astype("<i4").tobytes(),
            runs=starts.astype("<i4").tobytes(),
            run_segment=block.segment[starts].astype("<i4").tobytes(),
            run_kind=block.kind[starts].astype("i1").tobytes(),
            run_at=block.at[starts].astype("<i8").tobytes(),
        )
    )


def decode_block(blob: bytes) -> ChangeBlock:
    """A stored block of lines, in any of its forms."""
    stored = _decoder.decode(blob)
    if isinstance(stored, list):
        return ChangeBlock.of(stored)
    if stored.names is None:
        return ChangeBlock(
            stored.segments,
            np.frombuffer(stored.segment, "<i4").astype(np.int32),
            stored.users or [],
            np.frombuffer(stored.dense, "<i8").astype(np.int64),
            np.frombuffer(stored.kind, "i1").astype(np.int8),
            np.frombuffer(stored.at, "<i8").astype(np.int64),
        )
    entry = np.frombuffer(stored.entry, "<i4")
    names = np.empty(len(stored.names), dtype=object)
    names[:] = stored.names
    starts = np.frombuffer(stored.runs, "<i4")
    lengths = np.diff(starts, append=len(entry))
    return ChangeBlock(
        stored.segments,
        np.repeat(np.frombuffer(stored.run_segment, "<i4"), lengths).astype(np.int32),
        names[entry].tolist(),
        np.frombuffer(stored.ids, "<i8")[entry].astype(np.int64),
        np.repeat(np.frombuffer(stored.run_kind, "i1"), lengths).astype(np.int8),
        np.repeat(np.frombuffer(stored.run_at, "<i8"), lengths).astype(np.int64),
    )


def _entries(block: ChangeBlock) -> tuple[list[str], _Ints, _Ints]:
    """Each distinct (user id, dense id) of ``block`` once, and each line's index into them.

    A keyed block's are found by dense id alone (lines without one, -1, are an entry each);
    any other block's by both."""
    dense = block.dense.astype(np.int64)
    if block.keyed and len(dense):
        return _keyed_entries(block.user_ids, dense)
    index: dict[tuple[str, int], int] = {}
    pairs = zip(block.user_ids, dense.tolist(), strict=True)
    lines = [index.setdefault(pair, len(index)) for pair in pairs]
    return (
        [user_id for user_id, _ in index],
        np.array([d for _, d in index], np.int64),
        np.array(lines, np.int64),
    )


def _keyed_entries(user_ids: list[str], dense: _Ints) -> tuple[list[str], _Ints, _Ints]:
    """Entries by dense id: a table over the ids' range when it is not much wider than the
    lines (a batch's users come from one stretch of ids), a sort otherwise."""
    count = len(dense)
    has = dense >= 0
    known = dense[has]
    missing = np.flatnonzero(~has)  # lines without an id: an entry each
    low = int(known.min()) if len(known) else 0
    span = int(known.max()) - low + 1 if len(known) else 0
    if span > 4 * count:
        key = dense.copy()
        key[missing] = -1 - np.arange(len(missing))
        _, first, entry = np.unique(key, return_index=True, return_inverse=True)
        return [user_ids[line] for line in first.tolist()], dense[first], entry
    present = np.zeros(span, dtype=np.bool_)
    present[known - low] = True
    ids = np.flatnonzero(present) + low
    entry = np.empty(count, dtype=np.int64)
    entry[has] = (np.cumsum(present) - 1)[known - low]
    entry[missing] = len(ids) + np.arange(len(missing))  # after the others
    ids = np.concatenate([ids, dense[missing]])
    first = np.empty(len(ids), dtype=np.int64)
    first[entry] = np.arange(count)  # a line of each entry (they name one user)
    return [user_ids[line] for line in first.tolist()], ids, entry


def _run_starts(block: ChangeBlock) -> _Ints:
    """The first line of each run of lines with one segment, change and time."""
    count = len(block)
    new = np.ones(count, dtype=np.bool_)
    if count > 1:
        segment, kind, at = block.segment, block.kind, block.at
        np.not_equal(segment[1:], segment[:-1], out=new[1:])
        new[1:] |= kind[1:] != kind[:-1]
        new[1:] |= at[1:] != at[:-1]
    return np.flatnonzero(new)


def read_blocks(
    fetch: Callable[[int], list[tuple[int, bytes]]], sequence: int, limit: int
) -> list[tuple[int, ChangeBlock]]:
    """The lines after line ``sequence``, at most ``limit``, as blocks with the number of
    each one's first line. ``fetch(after)`` gives the next ``BLOCKS_PER_READ`` stored
    blocks whose last line comes after ``after``, as (last line number, encoded block)."""
    blocks: list[tuple[int, ChangeBlock]] = []
    room = limit
    while room > 0:
        stored = fetch(sequence)
        for last, blob in stored:
            whole = decode_block(blob)
            start, block = numbered_block(last - len(whole) + 1, whole, sequence, room)
            if len(block):
                blocks.append((start, block))
                room -= len(block)
                sequence = start + len(block) - 1
            if room <= 0:
                break
        if len(stored) < BLOCKS_PER_READ:
            break
    return blocks
