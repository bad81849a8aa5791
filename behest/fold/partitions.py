"""The partition stores of one generation: a RocksDB per partition, opened and closed as
partitions come and go (the projector), or followed as they appear (readers)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Final

from behest.errors import StateLockedError, StoreError
from behest.fold.layout import Layout, Manifest
from behest.fold.seeding import seed_from_standby
from behest.fold.store import StateStore

__all__ = ["HANDOVER_WAIT", "GenerationStores"]

log = logging.getLogger(__name__)

_RETIRE_AFTER: Final = 30.0
"""Seconds a replaced secondary stays open for reads still in flight on other threads."""
HANDOVER_WAIT: Final = 30.0
"""Seconds a writer waits for a partition store another process is still closing."""
_RETRY_EVERY: Final = 0.05


class GenerationStores:
    """The open partition stores of one generation.

    A writer (`secondary=False`) opens a partition's store when it is assigned the
    partition and closes it when it loses it, so the store's lock, its runs and its stored
    offset move together with the partition. A reader (`secondary=True`) opens, as RocksDB
    secondaries, the partition stores it finds on disk, and `discover()` adds new ones.
    """

    def __init__(
        self,
        layout: Layout,
        manifest: Manifest,
        *,
        secondary: bool,
        handover_wait: float = HANDOVER_WAIT,
    ) -> None:
        self.layout = layout
        self.manifest = manifest
        self.secondary = secondary
        self.handover_wait = handover_wait
        """Writers: how long `open` waits for a store locked by another process (below)."""
        self._stores: dict[int, StateStore] = {}
        self._manifests: dict[int, str] = {}
        """Readers: partition -> the MANIFEST its writer had when its secondary opened."""
        self._retired: list[tuple[float, StateStore]] = []
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def path(self) -> Path:
        return self.layout.generation_dir(self.generation)

    def partitions(self) -> list[int]:
        """The partitions whose stores are open here, in order."""
        return sorted(self._stores)

    def get(self, partition: int) -> StateStore | None:
        return self._stores.get(partition)

    def stores(self) -> list[tuple[int, StateStore]]:
        """`(partition, store)` of every open store, in partition order (a copy)."""
        return sorted(self._stores.items())

    def open(self, partition: int) -> StateStore:
        """The store of `partition`, opened (and, for a writer, created) if need be.

        A writer waits (up to `handover_wait` seconds) for a store another process holds:
        the group can assign a partition to one worker of a node before the worker that
        had it (on the same state dir) has seen the revocation and closed its store, which
        it does at its next poll. Past the wait the `StateLockedError` is raised."""
        with self._lock:
            store = self._stores.get(partition)
            if store is None:
                store = self._open_store(partition)
                self._stores[partition] = store
            return store

    def _open_store(self, partition: int) -> StateStore:
        path = self.layout.partition_dir(self.generation, partition)
        if self.secondary:
            manifest = _writer_manifest(path)
            store = StateStore(path, secondary=True)
            self._manifests[partition] = manifest
            return store
        deadline = time.monotonic() + self.handover_wait
        waited = False
        while True:
            try:
                store = StateStore(path)
            except StateLockedError:
                if time.monotonic() >= deadline:
                    raise
                if not waited:
                    log.info("partition %d: waiting for its previous holder to close it", partition)
                    waited = True
                time.sleep(_RETRY_EVERY)
                continue
            if waited:
                log.info("partition %d: handed over", partition)
            recorded = self.manifest
            return seed_from_standby(
                self.layout, recorded.topic, recorded.partitions, partition, store
            )

    def close_partition(self, partition: int) -> None:
        """Close one partition's store (a revoked partition); its files stay on disk."""
        with self._lock:
            store = self._stores.pop(partition, None)
        if store is not None:
            store.close()

    def discover(self) -> bool:
        """Readers: open the partition stores that appeared on disk since; True if any."""
        found = False
        for partition in self.layout.stored_partitions(self.generation):
            if partition not in self._stores:
                try:
                    self.open(partition)
                except StoreError:
                    continue  # being created right now: the next refresh opens it
                found = True
        if (found or self.manifest.partitions < 1) and self.secondary:
            self.manifest = self.layout.manifest(self.generation)  # its partition count
        return found

    def catch_up(self) -> None:
        """Readers: see what the writers wrote so far (only stores that changed).

        A store whose writer opened it again since (a partition revoked and assigned
        again, a restart) is read through a new secondary: RocksDB's catch-up misses what
        the writer flushed while recovering its log (facebook/rocksdb#14444), so the old
        one would go on answering states older than the offsets it reports."""
        for partition, store in self.stores():
            manifest = _writer_manifest(store.path)
            if manifest and manifest != self._manifests.get(partition):
                self._reopen(partition, store)
            else:
                store.catch_up_if_changed()
        self._close_retired()

    def _reopen(self, partition: int, old: StateStore) -> None:
        try:
            fresh = self._open_store(partition)
        except StoreError:
            old.catch_up_if_changed()  # being recovered right now: the next catch-up reopens
            return
        with self._lock:
            self._stores[partition] = fresh
            self._retired.append((time.monotonic(), old))

    def _close_retired(self) -> None:
        now = time.monotonic()
        while self._retired and now - self._retired[0][0] >= _RETIRE_AFTER:
            self._retired.pop(0)[1].close()

    def close(self) -> None:
        with self._lock:
            stores, self._stores = self._stores, {}
            retired, self._retired = [s for _, s in self._retired], []
        for store in [*stores.values(), *retired]:
            store.close()


def _writer_manifest(path: Path) -> str:
    """The MANIFEST a store's writer uses now (its CURRENT file): a new one each time the
    writer opens the store. Empty while there is none."""
    try:
        return (path / "CURRENT").read_text().strip()
    except OSError:
        return ""
