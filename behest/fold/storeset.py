"""A projection's served state as one read-only store, across its partition stores.

Readers ask a `StoreSet` what they would ask a `StateStore` (`get_state`, `get_states`,
`iter_events`, `scan_index`, …). It routes a run key to the store of the run's partition
(murmur2 of the run id modulo the partition count in the generation's manifest, exactly
as producers place the run), multi-gets once per partition, and merges scans across
partitions in key order. `catch_up()` follows the writers: it sees what they wrote, opens
partition stores that appeared, and, when CURRENT names another generation (a switch
after a rebuild or a new version, a rollback) or the served one was wiped and built anew,
reopens on the served one. The replaced stores are closed a little later, so reads in
flight on other threads finish on them: a reader never sees a half-built or deleted store.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, TypeVar

from behest.emit.partitioner import partition_for
from behest.errors import StoreError
from behest.fold.layout import DEFAULT_OWNER_MAX_AGE, Layout, Manifest, Owner
from behest.fold.partitions import GenerationStores
from behest.fold.sequences import RunHead
from behest.fold.store import RUN_KEY_SIZE, StateStore

__all__ = ["StoreSet"]

T = TypeVar("T")

_ROUTE_CACHE_LIMIT: Final = 100_000
_RETIRE_AFTER: Final = 30.0
"""Seconds replaced stores stay open for reads still in flight on other threads."""


class StoreSet:
    """The partition stores of a projection's served generation, read as one store.

    `StoreSet.open(state_dir, name)` reads beside running projectors (RocksDB secondaries)
    and follows switches. A `Projector` hands in-process readers one too (`projector.store`):
    its own open stores while it writes the served generation; the served one, followed,
    while it builds another.
    """

    def __init__(
        self,
        layout: Layout,
        stores: GenerationStores | None,
        *,
        follow: bool,
        owns: bool = False,
        combine: Callable[[list[bytes]], bytes] | None = None,
    ) -> None:
        self.layout = layout
        self.combine = combine
        """Adds up an entity's shares of several partitions (projections not keyed by run)."""
        self.follow = follow
        self._gen = stores
        self._owns = owns  # close `stores` on close (else they are their writer's)
        self._routes: dict[bytes, int] = {}
        self._retired: list[tuple[float, GenerationStores]] = []
        self._lock = threading.Lock()
        self._identity = self._served_identity() if follow else None

    @classmethod
    def open(
        cls,
        state_dir: Path | str,
        projection: str,
        *,
        secondary: bool = True,
        combine: Callable[[list[bytes]], bytes] | None = None,
    ) -> StoreSet:
        """The generation CURRENT names: as RocksDB secondaries that follow the projector
        (default), or opened for writing when no projector runs (`secondary=False`)."""
        layout = Layout.of(state_dir, projection)
        layout.check_not_legacy()
        stores = GenerationStores(layout, served_manifest(layout), secondary=secondary)
        stores.discover()
        return cls(layout, stores, follow=secondary, owns=True, combine=combine)

    # --- what is served -----------------------------------------------------------------------

    @property
    def secondary(self) -> bool:
        """Whether reads need `catch_up()` to see the writers' progress."""
        return self.follow or (self._gen is not None and self._gen.secondary)

    @property
    def manifest(self) -> Manifest | None:
        return None if self._gen is None else self._gen.manifest

    @property
    def generation(self) -> int | None:
        return None if self._gen is None else self._gen.generation

    @property
    def path(self) -> Path:
        """The folder read: the served generation's (the projection's before there is one)."""
        return self.layout.root if self._gen is None else self._gen.path

    def partitions(self) -> list[int]:
        """Partitions with a store open here (whether or not a projector owns them now)."""
        return [] if self._gen is None else self._gen.partitions()

    def owned(self, max_age: float = DEFAULT_OWNER_MAX_AGE) -> dict[int, Owner]:
        """Partition -> the live projector folding it into this generation now. A partition
        with a store but no live owner is a copy that may be behind (its owner moved to
        another node, or died)."""
        gen = self.generation
        return {} if gen is None else self.layout.owned_partitions(gen, max_age)

    def attach(self, stores: GenerationStores | None, *, follow: bool) -> None:
        """Read `stores` from now on (the projector moves its view; the old is retired)."""
        with self._lock:
            self._replace(stores)
            self.follow = follow
            self._identity = self._served_identity() if follow else None

    def follow_served(self) -> None:
        """Read the generation CURRENT names (as secondaries) and follow its switches."""
        with self._lock:
            self.follow = True
            identity = self._served_identity()
            if identity is None:
                self._replace(None)
                self._identity = None
            else:
                self._reopen(identity)

    def catch_up(self) -> bool:
        """See what the writers wrote and follow a switch; True if the generation changed."""
        with self._lock:
            switched = False
            if self.follow:
                identity = self._served_identity()
                if identity != self._identity:
                    self._reopen(identity)
                    switched = True
            gen = self._gen
            if gen is not None and gen.secondary:
                gen.discover()
                try:
                    gen.catch_up()
                except StoreError:
                    if not self.follow:
                        raise
                    self._reopen(self._served_identity())  # wiped under us: take the served
                    switched = True
            self._close_retired()
            return switched

    def catch_up_runs(self, runs: Sequence[bytes]) -> bool:
        """`catch_up`, but only the partition stores of `runs` (a watcher of a few runs
        need not replay every partition's writes); a switch or a missing store still
        takes the full `catch_up`. True if the generation changed."""
        with self._lock:
            gen = self._gen
            if not self.follow or gen is None or self._served_identity() != self._identity:
                full = True
            else:
                stores = {self._store_of(run) for run in runs}
                full = None in stores
                try:
                    for store in stores:
                        if store is not None:
                            store.catch_up_if_changed()
                except StoreError:
                    full = True
            if not full:
                return False
        return self.catch_up()

    def catch_up_if_changed(self) -> bool:
        """`catch_up`: each partition store catches up only if its writer wrote since."""
        return self.catch_up()

    def close(self) -> None:
        with self._lock:
            retired = [s for _, s in self._retired]
            if self._gen is not None and (self._owns or self._gen.secondary):
                retired.append(self._gen)
            self._gen = None
            self._retired.clear()
        for stores in retired:
            stores.close()

    def __enter__(self) -> StoreSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _served_identity(self) -> tuple[int, int] | None:
        """(generation, inode of its folder): changes on a switch and on a wipe + rebuild."""
        number = self.layout.current()
        if number is None:
            return None
        try:
            return number, self.layout.generation_dir(number).stat().st_ino
        except FileNotFoundError:
            return None

    def _reopen(self, identity: tuple[int, int] | None) -> None:
        if identity is None:
            raise StoreError(
                f"the projection state at {self.layout.root} is gone (no served generation): "
                "run `behest project` to build it"
            )
        stores = GenerationStores(self.layout, served_manifest(self.layout), secondary=True)
        stores.discover()
        self._replace(stores)
        self._identity = identity

    def _replace(self, stores: GenerationStores | None) -> None:
        old, self._gen = self._gen, stores
        self._routes = {}
        if old is not None and old is not stores and old.secondary:
            self._retired.append((time.monotonic(), old))

    def _close_retired(self) -> None:
        now = time.monotonic()
        while self._retired and now - self._retired[0][0] >= _RETIRE_AFTER:
            self._retired.pop(0)[1].close()

    # --- routing ------------------------------------------------------------------------------

    def partition_of(self, run: bytes) -> int:
        """The partition a run key (16 bytes) lives on, as the producers placed it."""
        routes = self._routes
        partition = routes.get(run)
        if partition is None:
            gen = self._gen
            if gen is None or gen.manifest.partitions < 1:
                return -1  # no partition count recorded yet: nothing folded either
            if gen.manifest.partitions == 1:
                return 0  # no hash to compute (murmur2 in Python costs more than the read)
            if len(routes) > _ROUTE_CACHE_LIMIT:
                routes.clear()
            text = str(uuid.UUID(bytes=run[:RUN_KEY_SIZE]))
            partition = partition_for(text.encode(), gen.manifest.partitions)
            routes[run] = partition
        return partition

    def _store_of(self, run: bytes) -> StateStore | None:
        """The store of a run's partition (None if this node has no store for it)."""
        gen = self._gen
        return None if gen is None else gen.get(self.partition_of(run))

    def _stores(self) -> list[StateStore]:
        gen = self._gen
        return [] if gen is None else [store for _, store in gen.stores()]

    # --- reads (the StateStore read API) ------------------------------------------------------

    def get_state(self, key: bytes) -> bytes | None:
        if not self._run_keyed():
            return self._combined(self.get_state_parts(key))
        store = self._store_of(key)
        return None if store is None else store.get_state(key)

    def get_state_parts(self, key: bytes) -> list[bytes]:
        """The state of `key` in every partition that has one: a projection not keyed by
        run folds each partition's share of an entity apart."""
        return [v for v in (s.get_state(key) for s in self._stores()) if v is not None]

    def get_states(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Multi-get: one RocksDB call per partition, answers in the order of `keys`."""
        if not self._run_keyed():
            return [self.get_state(key) for key in keys]
        return self._routed(keys, StateStore.get_states)

    def iter_states(self) -> Iterator[tuple[bytes, bytes]]:
        """Every `(key, state)` in key order (shares of an aggregate combined)."""
        return self.scan_states()

    def scan_states(
        self,
        prefix: bytes = b"",
        *,
        after: bytes | None = None,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """`(key, state)` under `prefix` strictly between `after` and `before`, merged
        across partitions in key order (descending with `reverse`)."""
        scans = [
            s.scan_states(prefix, after=after, before=before, reverse=reverse)
            for s in self._stores()
        ]
        merged = heapq.merge(*scans, key=_first, reverse=reverse)
        if self._run_keyed():
            return merged
        return (
            (key, self._combined([v for _, v in group]) or b"")
            for key, group in itertools.groupby(merged, key=_first)
        )

    def iter_state_parts(self) -> Iterator[tuple[bytes, list[bytes]]]:
        """`(key, [its state in each partition that has one])` in key order: the shares of
        a projection not keyed by run, for `behest.fold.projection.combine`."""
        scans = [s.scan_states() for s in self._stores()]
        for key, group in itertools.groupby(heapq.merge(*scans, key=_first), key=_first):
            yield key, [value for _, value in group]

    def scan_index(
        self,
        prefix: bytes,
        after: bytes | None = None,
        *,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[bytes]:
        """Index keys under `prefix` strictly between `after` and `before`, merged across
        partitions in order (an entry several partitions hold, once)."""
        scans = [
            s.scan_index(prefix, after, before=before, reverse=reverse) for s in self._stores()
        ]
        return (key for key, _ in itertools.groupby(heapq.merge(*scans, reverse=reverse)))

    def get_schema(self, fingerprint: bytes) -> bytes | None:
        """A writer schema kept with the folded events (in any partition store)."""
        for store in self._stores():
            found = store.get_schema(fingerprint)
            if found is not None:
                return found
        return None

    def get_head(self, run: bytes) -> RunHead | None:
        store = self._store_of(run)
        return None if store is None else store.get_head(run)

    def get_heads(self, runs: Sequence[bytes]) -> list[RunHead | None]:
        return self._routed(runs, StateStore.get_heads)

    def stored_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to fold per partition, each from its partition's own store."""
        offsets: dict[int, int] = {}
        for store in self._stores():
            offsets.update(store.stored_offsets(topic))
        return offsets

    def iter_events(
        self, run: bytes, from_sequence: int = 0, to_sequence: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        store = self._store_of(run)
        return iter(()) if store is None else store.iter_events(run, from_sequence, to_sequence)

    def last_event(self, run: bytes) -> tuple[int, bytes] | None:
        store = self._store_of(run)
        return None if store is None else store.last_event(run)

    def snapshot_at_or_before(self, run: bytes, sequence: int) -> tuple[int, bytes] | None:
        store = self._store_of(run)
        return None if store is None else store.snapshot_at_or_before(run, sequence)

    def snapshot_sequence_at_or_before_time(self, run: bytes, micros: int) -> int | None:
        store = self._store_of(run)
        return None if store is None else store.snapshot_sequence_at_or_before_time(run, micros)

    def snapshot_at_or_before_time(self, run: bytes, micros: int) -> tuple[int, bytes] | None:
        store = self._store_of(run)
        return None if store is None else store.snapshot_at_or_before_time(run, micros)

    def _run_keyed(self) -> bool:
        gen = self._gen
        return gen is None or gen.manifest.run_keyed

    def _combined(self, shares: list[bytes]) -> bytes | None:
        if len(shares) <= 1:
            return shares[0] if shares else None
        if self.combine is None:
            raise StoreError(
                f"{self.layout.name} is not keyed by run and folds each partition's share of "
                "an entity apart: give the projection a `combine(a, b)` to add shares up"
            )
        return self.combine(shares)

    def _routed(
        self, keys: Sequence[bytes], read: Callable[[StateStore, Sequence[bytes]], list[T | None]]
    ) -> list[T | None]:
        """`read(store, keys)` once per partition store; answers in the order asked."""
        answers: list[T | None] = [None] * len(keys)
        groups: dict[StateStore, list[int]] = {}
        for i, key in enumerate(keys):
            store = self._store_of(key)
            if store is not None:
                groups.setdefault(store, []).append(i)
        for store, positions in groups.items():
            values = read(store, [keys[i] for i in positions])
            for i, value in zip(positions, values, strict=True):
                answers[i] = value
        return answers


def _first(item: tuple[bytes, bytes]) -> bytes:
    return item[0]


def served_manifest(layout: Layout) -> Manifest:
    """The manifest of the generation CURRENT names; a clear error when there is none."""
    number = layout.current()
    if number is None:
        raise StoreError(
            f"no projection state at {layout.root}: run `behest project` first "
            "(or point BEHEST_STATE_DIR at the projector's state directory)"
        )
    return layout.manifest(number)
