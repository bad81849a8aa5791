"""The pure partitioner agrees with Kafka's Java client and with aiokafka."""

from __future__ import annotations

import random
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from behest.emit.partitioner import murmur2, partition_for, run_key, to_positive

# Apache Kafka's own vectors: clients/.../common/utils/UtilsTest.java, testMurmur2.
JAVA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "expected"), JAVA_VECTORS)
def test_murmur2_matches_kafka_java_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_murmur2_matches_aiokafka_on_every_length() -> None:
    rng = random.Random(7)
    for length in range(0, 80):
        for _ in range(5):
            data = rng.randbytes(length)
            assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data), data


def test_to_positive_clears_only_the_sign_bit() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


def test_run_key_is_canonical_lowercase_uuid_text() -> None:
    run_id = uuid.UUID("3F2C9A1E-8B4D-4C6F-9E2A-1B7D5C3E9F00")
    assert run_key(run_id) == b"3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00"
    assert run_key("3F2C9A1E-8B4D-4C6F-9E2A-1B7D5C3E9F00") == run_key(run_id)
    assert len(run_key(run_id)) == 36


@pytest.mark.parametrize("partitions", [1, 3, 6, 7, 12, 100])
def test_partition_for_matches_aiokafka_default_partitioner(partitions: int) -> None:
    rng = random.Random(partitions)
    ids = list(range(partitions))
    for _ in range(300):
        key = run_key(uuid.UUID(int=rng.getrandbits(128), version=4))
        assert partition_for(key, partitions) == DefaultPartitioner()(key, ids, ids)


def test_partition_for_accepts_run_ids_and_spreads_them() -> None:
    rng = random.Random(1)
    run_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(600)]
    placed = [partition_for(run_id, 6) for run_id in run_ids]
    assert placed == [partition_for(run_key(r), 6) for r in run_ids]
    assert set(placed) == set(range(6))


def test_partition_for_rejects_no_partitions() -> None:
    with pytest.raises(ValueError, match="positive"):
        partition_for(b"x", 0)
