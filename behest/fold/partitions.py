"""The partition stores of one generation: a RocksDB per partition, opened and closed as
partitions come and go (the projector), or followed as they appear (readers)."""

from __future__ import annotations

import threading
from pathlib import Path

from behest.errors import StoreError
from behest.fold.layout import Layout, Manifest
from behest.fold.store import StateStore

__all__ = ["GenerationStores"]


class GenerationStores:
    """The open partition stores of one generation.

    A writer (`secondary=False`) opens a partition's store when it is assigned the
    partition and closes it when it loses it, so the store's lock, its runs and its stored
    offset move together with the partition. A reader (`secondary=True`) opens, as RocksDB
    secondaries, the partition stores it finds on disk, and `discover()` adds new ones.
    """

    def __init__(self, layout: Layout, manifest: Manifest, *, secondary: bool) -> None:
        self.layout = layout
        self.manifest = manifest
        self.secondary = secondary
        self._stores: dict[int, StateStore] = {}
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
        """The store of `partition`, opened (and, for a writer, created) if need be."""
        with self._lock:
            store = self._stores.get(partition)
            if store is None:
                path = self.layout.partition_dir(self.generation, partition)
                store = StateStore(path, secondary=self.secondary)
                self._stores[partition] = store
            return store

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
        """Readers: see what the writers wrote so far (only stores that changed)."""
        for _, store in self.stores():
            store.catch_up_if_changed()

    def close(self) -> None:
        with self._lock:
            stores, self._stores = self._stores, {}
        for store in stores.values():
            store.close()
