"""Which generation a projector writes, and the partition stores it writes while it does.

`plan` decides, from what is on disk, whether a projector serves the served generation,
builds a new one beside it (a new projection version, or `--rebuild`), or resumes a build.
`GenerationWriter` is that generation on the writing side: it opens a partition's store
when the partition is assigned and closes it when it is revoked, folds each partition's
records into that partition's store in one `WriteBatch` (state and offset together),
keeps the owner file that tells readers which partitions this process folds now, and
switches CURRENT to its generation once the build has caught up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from behest.errors import StoreError
from behest.fold.engine import BatchFolder, BatchResult, DeadLetter, LogRecord
from behest.fold.layout import Layout, Manifest, generation_name
from behest.fold.partitions import GenerationStores
from behest.fold.projection import Projection

__all__ = ["GenerationWriter", "Plan", "merge_results", "plan", "projection_version"]

log = logging.getLogger(__name__)

HEARTBEAT_EVERY: Final = 1.0
"""Seconds between rewrites of the owner file (readers count it live for 10 s)."""


def projection_version(projection: Projection[Any]) -> int:
    """A projection's `version` attribute (1 when it has none): bump it when its fold or
    its stored form changes, and `behest project` builds the new version beside the old."""
    version = getattr(projection, "version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"{type(projection).__name__}.version must be a whole number from 1, not {version!r}"
        )
    return version


@dataclass(frozen=True)
class Plan:
    """What a projector is to write: `generation` (None: a new one), served at once
    (`build` False) or built beside the served one and switched to once caught up."""

    generation: int | None
    build: bool
    why: str


def plan(manifests: Sequence[Manifest], served: int | None, version: int, *, rebuild: bool) -> Plan:
    """The generation a projector of `version` writes, given the generations on disk."""
    mine = [m for m in manifests if m.version == version]
    current = next((m for m in manifests if m.generation == served), None)
    if current is None:
        # Nothing is served yet: there is nothing to keep readers on, so serve at once.
        if mine and not rebuild:
            return Plan(mine[-1].generation, build=False, why="resumed; nothing else is served")
        return Plan(None, build=False, why="the first generation")
    if rebuild:
        return Plan(None, build=True, why=f"a rebuild beside {current.name}")
    if current.version == version:
        return Plan(current.generation, build=False, why="the served generation")
    if current.version > version:
        raise StoreError(
            f"{current.name} of {current.projection} is served, built by version "
            f"{current.version}, newer than this projector's version {version}: run the newer "
            "code, or serve an older generation again with `behest generations rollback`"
        )
    if mine:
        newest = mine[-1]
        if newest.rolled_back_at is not None:
            raise StoreError(
                f"readers were rolled back from {newest.name} (version {version}) to "
                f"{current.name}: to build version {version} again, drop it first "
                f"(`behest generations drop {newest.name}`), or serve it again with "
                f"`behest generations switch {newest.name}`"
            )
        return Plan(newest.generation, build=True, why=f"resumed build of version {version}")
    return Plan(None, build=True, why=f"version {version} beside version {current.version}")


def merge_results(results: Iterable[BatchResult]) -> BatchResult:
    """One `BatchResult` for a batch folded partition by partition (counts add up)."""
    total = BatchResult()
    for result in results:
        for f in fields(BatchResult):
            mine, theirs = getattr(total, f.name), getattr(result, f.name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, dict):
                mine.update(theirs)
            else:
                setattr(total, f.name, mine + theirs)
    return total


class GenerationWriter:
    """One generation on the writing side: the stores of the partitions this process owns."""

    def __init__(
        self,
        layout: Layout,
        manifest: Manifest,
        projection: Projection[Any],
        *,
        member: str,
        snapshot_every: int,
        **folder_options: Any,
    ) -> None:
        """`folder_options` go to each partition's `BatchFolder` (`hold`, `decode`)."""
        self.layout = layout
        self.projection = projection
        self.member = member
        self.snapshot_every = snapshot_every
        self.folder_options = folder_options
        self.stores = GenerationStores(layout, manifest, secondary=False)
        self._folders: dict[int, BatchFolder[Any]] = {}
        self._owned: set[int] = set()
        self._beat = 0.0

    @property
    def manifest(self) -> Manifest:
        return self.stores.manifest

    @property
    def generation(self) -> int:
        return self.stores.generation

    @property
    def name(self) -> str:
        return generation_name(self.generation)

    @property
    def owned(self) -> tuple[int, ...]:
        return tuple(sorted(self._owned))

    # --- ownership ----------------------------------------------------------------------------

    def add(self, partitions: Iterable[int]) -> dict[int, int]:
        """Own `partitions` too: open their stores and claim them. Returns the next offset
        each store holds (absent: nothing folded there yet, start from offset 0)."""
        offsets: dict[int, int] = {}
        topic = self.manifest.topic
        for partition in partitions:
            store = self.stores.open(partition)
            if partition not in self._folders:
                self._folders[partition] = BatchFolder(
                    store,
                    self.projection,
                    topic=topic,
                    snapshot_every=self.snapshot_every,
                    **self.folder_options,
                )
            offsets.update(store.stored_offsets(topic))
            self._owned.add(partition)
        self.heartbeat(force=True)
        return offsets

    def remove(self, partitions: Iterable[int], *, close: bool = True) -> None:
        """Own `partitions` no more: closed (so their next owner here may open them), or,
        with `close=False`, kept open for this process's readers but no longer claimed."""
        for partition in partitions:
            self._owned.discard(partition)
            if close:
                self._folders.pop(partition, None)
                self.stores.close_partition(partition)
        self.heartbeat(force=True)

    def release(self) -> None:
        """Own nothing (the consumer left the group); stores stay open for readers."""
        self._owned.clear()
        self.layout.remove_owner(self.generation, self.member)

    def heartbeat(self, *, force: bool = False) -> None:
        """Rewrite the owner file at most every `HEARTBEAT_EVERY` seconds (or now)."""
        now = time.monotonic()
        if force or now - self._beat >= HEARTBEAT_EVERY:
            self._beat = now
            self.layout.write_owner(self.generation, self.member, self._owned)

    def is_served(self) -> bool:
        return self.layout.current() == self.generation

    def switch(self) -> None:
        """Serve this generation from now on (readers follow on their next refresh)."""
        self.stores.manifest = self.layout.switch(self.generation)

    def ensure_partitions(self, partitions: int) -> None:
        """Record a grown partition count (partitions added to the topic) in the manifest."""
        if partitions > self.manifest.partitions:
            manifest = replace(self.manifest, partitions=partitions)
            self.layout.write_manifest(manifest)
            self.stores.manifest = manifest

    # --- folding ------------------------------------------------------------------------------

    def process(
        self,
        records: Sequence[LogRecord],
        *,
        dead_letter: Callable[[list[DeadLetter]], None] | None = None,
    ) -> BatchResult:
        """Fold a consumed batch: each partition's records into its own store, in one
        `WriteBatch` per partition (its states and its next offset together), written once
        the whole batch's dead letters are stored. Records of a partition not owned here
        (revoked meanwhile) are left to its new owner."""
        by_partition: dict[int, list[LogRecord]] = {}
        for record in records:
            by_partition.setdefault(record.partition(), []).append(record)
        folded = []
        for partition, chunk in by_partition.items():
            folder = self._folders.get(partition) if partition in self._owned else None
            if folder is None:
                log.debug("skipping %d records of partition %d: not owned", len(chunk), partition)
                continue
            folded.append((folder, *folder.fold(chunk)))
        result = merge_results(r for _, r, _ in folded)
        if result.dead_letters and dead_letter is not None:
            dead_letter(result.dead_letters)  # stored durably, or nothing of the batch is
        for folder, _, batch in folded:
            folder.store.write(batch)
        return result

    def close(self) -> None:
        """Release the claim and close every store."""
        self.release()
        self._folders.clear()
        self.stores.close()
