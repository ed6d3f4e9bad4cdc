"""How both stores encode a block of change-log lines.

A block is stored column-wise: a msgpack map of the segment ids, the user ids and the
other columns as little-endian arrays. Blocks written before were a msgpack array of
lines; they still decode (a map and an array are told apart by their first byte).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np

from audience_manager.store.base import ChangeBlock, ChangeRecord, numbered_block

__all__ = ["decode_block", "encode_block", "read_blocks"]

#: Stored blocks fetched at a time while reading the log.
BLOCKS_PER_READ = 8


class _Columns(msgspec.Struct, gc=False):
    segments: list[str]
    segment: bytes  # int32 per line: index into segments
    users: list[str]
    dense: bytes  # int64 per line
    kind: bytes  # int8 per line: index into CHANGE_KINDS
    at: bytes  # int64 per line


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Columns | list[ChangeRecord])


def encode_block(changes: ChangeBlock | list[ChangeRecord]) -> bytes:
    """The stored form of a block of lines."""
    block = changes if isinstance(changes, ChangeBlock) else ChangeBlock.of(changes)
    return _encoder.encode(
        _Columns(
            block.segments,
            block.segment.astype("<i4").tobytes(),
            block.user_ids,
            block.dense.astype("<i8").tobytes(),
            block.kind.astype("i1").tobytes(),
            block.at.astype("<i8").tobytes(),
        )
    )


def decode_block(blob: bytes) -> ChangeBlock:
    """A stored block of lines, in either form."""
    stored = _decoder.decode(blob)
    if isinstance(stored, list):
        return ChangeBlock.of(stored)
    return ChangeBlock(
        stored.segments,
        np.frombuffer(stored.segment, "<i4").astype(np.int32),
        stored.users,
        np.frombuffer(stored.dense, "<i8").astype(np.int64),
        np.frombuffer(stored.kind, "i1").astype(np.int8),
        np.frombuffer(stored.at, "<i8").astype(np.int64),
    )


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
