"""A projector's generations: the one it writes, the one its readers see, and the switch.

`behest.fold.generations.plan` decides from what is on disk which generation a projector
writes; `Generations` carries that out for one projector. It keeps the projector's
`GenerationWriter` (replacing it when the decision changes), and the `StoreSet` its
in-process readers use: the writer's own stores while that generation is served, the
served generation (followed) while a new one builds beside it. `switch_to` moves readers
over once the build has caught up. Consuming stays with `behest.fold.projector`: this
module imports no Kafka client (the log end offsets a new build must reach come in as a
callable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from behest.fold.generations import GenerationWriter, plan, projection_version
from behest.fold.layout import Layout, Manifest
from behest.fold.projection import Projection, combiner
from behest.fold.store import StateStore
from behest.fold.storeset import StoreSet

__all__ = ["Generations"]

log = logging.getLogger(__name__)


class Generations:
    """The generation one projector writes, and the stores its in-process readers read."""

    def __init__(
        self,
        layout: Layout,
        projection: Projection[Any],
        *,
        topic: str,
        member: str,
        snapshot_every: int,
        **folder_options: Any,
    ) -> None:
        """`folder_options` go to each partition's `BatchFolder` (`hold`, `decode`)."""
        self.layout = layout
        self.projection = projection
        self.topic = topic
        self.member = member
        self.snapshot_every = snapshot_every
        self.folder_options = folder_options
        self.version = projection_version(projection)
        self.view = StoreSet(layout, None, follow=False, combine=combiner(projection))
        """What in-process readers read (read methods only: the writer is ours)."""
        self.writer: GenerationWriter | None = None
        """The generation being written (None before the first decision)."""

    def writing(self) -> GenerationWriter:
        """The writer, which `first` or `prepare` must have made."""
        if self.writer is None:
            raise RuntimeError("no generation is being written: call run() or rebuild()")
        return self.writer

    def stores(self) -> list[StateStore]:
        """Every partition store the writer has open (where writer schemas are kept)."""
        return [] if self.writer is None else [s for _, s in self.writer.stores.stores()]

    def first(self) -> None:
        """Nothing is served yet: make the first generation at once (readers can open it
        before the projector runs; its partition count is recorded once Kafka is asked)."""
        with self.layout.locked():
            if self.layout.current() is not None:
                return
            decided = plan(self.layout.manifests(), None, self.version, rebuild=False)
            manifest = self._manifest(decided.generation, partitions=0, targets=None)
            writer = self.writer = self._new_writer(manifest)
            writer.switch()
        self.view.attach(writer.stores, follow=False)

    def prepare(
        self,
        partitions: Sequence[int],
        *,
        rebuild: bool,
        targets: Callable[[], dict[int, int]],
    ) -> tuple[GenerationWriter, bool]:
        """Pick the generation to write (`generations.plan`) and get its writer ready;
        readers are pointed at it if it is served, else at the served one (followed).

        `targets` gives the log end offsets a new build must reach (asked only when one
        starts). Returns the writer and whether it is a new one (positions start over)."""
        with self.layout.locked():  # one decision at a time among this state dir's projectors
            writer, fresh = self._decide(partitions, rebuild=rebuild, targets=targets)
        if writer.is_served():
            self.view.attach(writer.stores, follow=False)
        else:
            self.view.follow_served()
        return writer, fresh

    def _decide(
        self,
        partitions: Sequence[int],
        *,
        rebuild: bool,
        targets: Callable[[], dict[int, int]],
    ) -> tuple[GenerationWriter, bool]:
        """`generations.plan`, carried out: the writer of the generation to write."""
        layout = self.layout
        if rebuild and layout.is_legacy():
            layout.remove_legacy()
        layout.check_not_legacy()
        decided = plan(layout.manifests(), layout.current(), self.version, rebuild=rebuild)
        writer = self.writer
        fresh = writer is None or decided.generation != writer.generation
        if writer is None or decided.generation != writer.generation:
            if writer is not None:
                self.view.attach(None, follow=False)
                writer.close()
            new_build = decided.generation is None and decided.build
            manifest = self._manifest(
                decided.generation,
                partitions=len(partitions),
                targets=targets() if new_build else {},
            )
            writer = self.writer = self._new_writer(manifest)
        writer.ensure_partitions(len(partitions))
        if not decided.build and not writer.is_served():
            writer.switch()
        log.info(
            "%s: writing %s (version %d): %s",
            self.projection.name,
            writer.name,
            self.version,
            decided.why,
        )
        return writer, fresh

    def _manifest(
        self, generation: int | None, *, partitions: int, targets: dict[int, int] | None
    ) -> Manifest:
        """The manifest of `generation`, or of a new generation (None) of `partitions`
        partitions, to be built up to `targets` (the log end offsets when it began)."""
        if generation is not None:
            return self.layout.manifest(generation)
        return self.layout.create(
            version=self.version,
            topic=self.topic,
            partitions=partitions,
            run_keyed=self.projection.run_keyed,
            targets=targets,
        )

    def _new_writer(self, manifest: Manifest) -> GenerationWriter:
        return GenerationWriter(
            self.layout,
            manifest,
            self.projection,
            member=self.member,
            snapshot_every=self.snapshot_every,
            **self.folder_options,
        )

    def begin_build(self, partitions: Sequence[int]) -> dict[int, int]:
        """Own every partition of the generation being built (outside the consumer group).
        Returns the next offset each store holds (absent: build it from offset 0)."""
        writer = self.writing()
        stored = writer.add(partitions)
        log.info(
            "building %s beside the served generation from %s; readers switch once caught up",
            writer.name,
            {p: stored.get(p, 0) for p in partitions},
        )
        return stored

    def switch_to(self, writer: GenerationWriter) -> None:
        """The build caught up: serve it, and point in-process readers at it."""
        writer.switch()
        self.view.attach(writer.stores, follow=False)
        log.info("%s caught up: readers switched to it", writer.name)

    def log_served_elsewhere(self, writer: GenerationWriter) -> None:
        """Another generation was switched to while this one was served: its projector
        stops (its generation stays for rollback)."""
        log.warning(
            "generation %s is served now, not %s: this projector (version %d) stops; %s "
            "stays for `behest generations rollback` until dropped",
            self.layout.current(),
            writer.name,
            self.version,
            writer.name,
        )

    def close(self) -> None:
        """Close the readers' view and the writer (releasing the stores' locks)."""
        self.view.close()
        if self.writer is not None:
            self.writer.close()
