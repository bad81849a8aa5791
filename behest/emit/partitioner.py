"""Which partition a run's events land on: Java's default partitioner, in pure Python.

Kafka's Java client, aiokafka and confluent-kafka configured with `murmur2_random` all
place a keyed record on `toPositive(murmur2(key)) % partitions`. Computing it here lets
tests, tools and services in other languages agree on where a run lives without a broker.
"""

from __future__ import annotations

import random
import uuid

__all__ = ["JavaPartitioner", "murmur2", "partition_for", "run_key", "to_positive"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 of `data` exactly as `org.apache.kafka.common.utils.Utils.murmur2`
    computes it: a signed 32-bit int (Java's `int`)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(number: int) -> int:
    """Java's `Utils.toPositive`: clear the sign bit (not `abs`, which overflows)."""
    return number & 0x7FFFFFFF


def run_key(run_id: uuid.UUID | str) -> bytes:
    """The Kafka key of a run: its canonical lowercase UUID text in UTF-8 (36 bytes)."""
    if not isinstance(run_id, uuid.UUID):
        run_id = uuid.UUID(run_id)
    return str(run_id).encode()


def partition_for(key: bytes | str | uuid.UUID, partitions: int) -> int:
    """The partition Java's default partitioner picks for `key` among `partitions`.

    A `UUID` or `str` is taken as a run id and turned into its key first.
    """
    if partitions <= 0:
        raise ValueError(f"partitions must be positive, got {partitions}")
    if not isinstance(key, bytes):
        key = run_key(key)
    return to_positive(murmur2(key)) % partitions


class JavaPartitioner:
    """aiokafka partitioner that places keys as Java does, remembering the hash of each
    key it has seen (aiokafka's own computes murmur2 in Python for every record)."""

    __slots__ = ("_hashes",)

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)  # noqa: S311 - not security
        return self.partition(key, len(all_partitions))

    def partition(self, key: bytes, count: int) -> int:
        """`toPositive(murmur2(key)) % count`, the hash remembered per key."""
        positive = self._hashes.get(key)
        if positive is None:
            if len(self._hashes) >= 65_536:
                self._hashes.clear()
            positive = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return positive % count
