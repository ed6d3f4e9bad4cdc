from hypothesis import given
from hypothesis import strategies as st

from audience_manager.bus.partitioning import (
    murmur2,
    murmur2_many,
    partition_for_key,
    partitions_for_keys,
)

# Apache Kafka's UtilsTest.testMurmur2 vectors: the hash Java producers partition by.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_kafka() -> None:
    for data, expected in KAFKA_VECTORS.items():
        assert murmur2(data) == expected


def test_partition_is_the_positive_hash_modulo_the_partition_count() -> None:
    for data, expected in KAFKA_VECTORS.items():
        for partitions in (1, 3, 8, 12):
            assert (
                partition_for_key(data.decode(), partitions) == (expected & 0x7FFFFFFF) % partitions
            )


@given(st.lists(st.binary(max_size=70), min_size=1, max_size=80), st.integers(1, 64))
def test_the_vectorised_hash_agrees_with_the_scalar_one(keys: list[bytes], partitions: int) -> None:
    assert murmur2_many(keys).tolist() == [murmur2(key) & 0xFFFFFFFF for key in keys]
    expected = [(murmur2(key) & 0x7FFFFFFF) % partitions for key in keys]
    assert partitions_for_keys(keys, partitions).tolist() == expected


def test_utf8_keys_hash_their_encoded_bytes() -> None:
    assert partition_for_key("é-ü", 7) == (murmur2("é-ü".encode()) & 0x7FFFFFFF) % 7
