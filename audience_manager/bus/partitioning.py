"""Key to partition, exactly like Kafka's default partitioner.

Kafka hashes a key's bytes with its 32-bit murmur2 (seed ``0x9747b28c``) and takes
``(hash & 0x7fffffff) % partitions``. Using the same function in every backend means a
user's events land on the same partition number whether the log is embedded or Kafka.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import repeat

import numpy as np
import numpy.typing as npt

__all__ = ["murmur2", "murmur2_many", "partition_for_key", "partitions_for_keys"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
# Below this many keys the vectorised version costs more than it saves.
_VECTOR_MIN = 32


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: the signed 32-bit hash of ``data``."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    blocks = length >> 2
    if blocks:
        for k in struct.unpack_from(f"<{blocks}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        start = length & ~3
        if tail == 3:
            h ^= data[start + 2] << 16
        if tail >= 2:
            h ^= data[start + 1] << 8
        h = ((h ^ data[start]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_many(keys: Sequence[bytes]) -> npt.NDArray[np.uint64]:
    """``murmur2`` of every key as unsigned 32-bit values, computed column-wise in numpy."""
    count = len(keys)
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=count)
    # One zero-padded row per key, at least one spare word so the tail word always exists.
    width = (int(lengths.max()) + 4) & ~3
    blob = b"".join(map(bytes.ljust, keys, repeat(width, count), repeat(b"\0", count)))
    words = np.frombuffer(blob, dtype="<u4").reshape(count, width // 4)
    # Unsigned 32-bit arrays wrap around on overflow, as the hash's arithmetic does.
    m = np.uint32(_M)
    h = lengths.astype(np.uint32) ^ np.uint32(_SEED)
    blocks = lengths >> 2
    for column in range(int(blocks.max())):
        k = words[:, column] * m
        k ^= k >> np.uint32(24)
        k *= m
        h = np.where(column < blocks, (h * m) ^ k, h)
    tail = words[np.arange(count), blocks]
    h = np.where((lengths & 3) != 0, (h ^ tail) * m, h)
    h ^= h >> np.uint32(13)
    h *= m
    h ^= h >> np.uint32(15)
    return h.astype(np.uint64)


def partition_for_key(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def partitions_for_keys(keys: Sequence[bytes], partitions: int) -> npt.NDArray[np.int64]:
    """``partition_for_key`` of many UTF-8 encoded keys at once."""
    if len(keys) < _VECTOR_MIN:
        chosen = [(murmur2(key) & 0x7FFFFFFF) % partitions for key in keys]
        return np.array(chosen, dtype=np.int64)
    hashes = murmur2_many(keys) & np.uint64(0x7FFFFFFF)
    return (hashes % np.uint64(partitions)).astype(np.int64)
