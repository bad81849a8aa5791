"""Seeding a partition's store from this node's standby copy, when that copy is further on.

A node that gains a partition resumes from its own store of that partition if it has one,
else from the standby copy it kept of the partition (`behest node --standby-replicas`),
else from offset 0: whichever folded further. The standby copy is one store for the
partitions a node stands by for (`<state dir>/standby/<projection>`, written by the node's
main process); seeding reads it through a fresh RocksDB secondary (a consistent view of
it), replaces the partition's own store with that partition's runs from it (states,
events, snapshots, index entries, heads, the writer schemas) and writes the copy's offset
last, so a seeding cut short is seen as no seeding and done again.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final

from behest.emit.partitioner import partition_for
from behest.errors import StoreError
from behest.fold.layout import Layout
from behest.fold.store import (
    EVENTS,
    HEADS,
    INDEX,
    RUN_KEY_SIZE,
    SCHEMAS,
    SNAPSHOTS,
    SNAPTIMES,
    STATES,
    StateStore,
)

__all__ = ["STANDBY_FOLDER", "seed_from_standby", "standby_path"]

log = logging.getLogger(__name__)

STANDBY_FOLDER: Final = "standby"
_CHUNK: Final = 5_000
"""Entries per write while copying."""

_RUN_FIRST: Final = (STATES, EVENTS, SNAPSHOTS, SNAPTIMES, HEADS)
"""Families whose keys start with the run's 16 bytes (index keys end with them)."""


def standby_path(state_dir: Path | str, projection: str) -> Path:
    """Where a node keeps its standby copies of `projection`."""
    return Path(state_dir) / STANDBY_FOLDER / projection


def seed_from_standby(
    layout: Layout, topic: str, partitions: int, partition: int, store: StateStore
) -> StateStore:
    """`store` (a writer's, just opened), or, if this node's standby copy folded
    `partition` further, a new store at its path holding that copy's share."""
    source_path = standby_path(layout.root.parent, layout.name)
    if partitions < 1 or not (source_path / "CURRENT").exists():
        return store
    own = store.stored_offsets(topic).get(partition, 0)
    try:
        source = StateStore(source_path, secondary=True)
    except StoreError:
        return store  # being created: nothing to seed from yet
    try:
        theirs = source.stored_offsets(topic).get(partition, 0)
        if theirs <= own:
            return store
        path = store.path
        store.close()
        shutil.rmtree(path)  # runs it had may be deleted since: start from the copy alone
        seeded = StateStore(path)
        copied = _copy(source, seeded, _in_partition(partition, partitions))
        batch = seeded.batch()
        batch.put_offset(topic, partition, theirs)
        seeded.write(batch)
    finally:
        source.close()
    log.info(
        "partition %d: seeded from the standby copy (%d entries, at offset %d; own store at %d)",
        partition,
        copied,
        theirs,
        own,
    )
    return seeded


def _in_partition(partition: int, partitions: int) -> Callable[[bytes], bool]:
    cache: dict[bytes, bool] = {}

    def keep(run: bytes) -> bool:
        found = cache.get(run)
        if found is None:
            found = partition_for(str(uuid.UUID(bytes=run)), partitions) == partition
            cache[run] = found
        return found

    return keep


def _copy(source: StateStore, target: StateStore, keep: Callable[[bytes], bool]) -> int:
    """The entries of the runs `keep` accepts, and every writer schema; how many."""
    copied = 0
    batch = target.batch()
    for family in (*_RUN_FIRST, INDEX, SCHEMAS):
        for key, value in source.iter_family(family):
            if family in _RUN_FIRST and not keep(key[:RUN_KEY_SIZE]):
                continue
            if family == INDEX and not keep(key[-RUN_KEY_SIZE:]):
                continue
            batch.put_raw(family, key, value)
            copied += 1
            if copied % _CHUNK == 0:
                target.write(batch)
                batch = target.batch()
    target.write(batch)
    return copied
