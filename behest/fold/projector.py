"""The Projector: the Kafka runtime that folds the event log into a projection's RocksDB.

Exactly once without Kafka transactions: every batch of records becomes ONE RocksDB
`WriteBatch` (built by `behest.fold.engine.BatchFolder`) holding the new states, the run's
events, snapshots, index changes, per-run heads and the next offset of every partition the
batch touched. On (re)assignment the consumer seeks to the offsets stored in RocksDB, so
after any crash it resumes exactly where its last write left off. Kafka's committed offsets
are written too, but only so that standard tools can show the group's lag.

State is owned per partition (`behest.fold.layout`): each partition has its own RocksDB,
holding its runs and its next offset, opened when the partition is assigned and closed when
it is revoked. Several projectors in one consumer group thus split the stores with the
partitions; a projector that gets a partition back resumes from that store's offset (from 0
if it never had it). `ProjectorMetrics.assigned`, and the owner file readers see, say which
partitions an instance folds now.

Blue/green: a projection with a new `version`, or `rebuild()`, builds a new generation
beside the served one, reading every partition from offset 0 (assigned directly, outside
the consumer group, so the served generation's projectors keep theirs), while readers keep
reading the served one. Once it has folded up to the log end offsets seen when the build
began *and* to the live end, CURRENT is switched to it atomically; the projector then joins
the group and carries on serving it. A projector whose generation stops being served (one
newer was switched to) stops by itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from behest import codec
from behest.config import Settings
from behest.errors import (
    BehestError,
    MemberFencedError,
    TopicMissingError,
)
from behest.fold.bluegreen import Generations
from behest.fold.consumer import (
    consumer_config,
    log_end_offsets,
    membership_refused,
    topic_partitions,
)
from behest.fold.deadletter import DeadLetterSender
from behest.fold.engine import DEFAULT_SNAPSHOT_EVERY, BatchResult
from behest.fold.generations import GenerationWriter, projection_version
from behest.fold.heartbeat import HeartbeatWriter, heartbeat_path
from behest.fold.layout import Layout, new_member_id
from behest.fold.membership import StaticIdentity
from behest.fold.progress import Progress, ProjectorMetrics
from behest.fold.projection import Projection
from behest.fold.schemas import SchemaWait
from behest.fold.storeset import StoreSet
from behest.registry import framing_decoder
from behest.telemetry import fold_span

__all__ = ["DEFAULT_BATCH_SIZE", "Projector", "ProjectorMetrics"]

log = logging.getLogger(__name__)
kafka_log = logging.getLogger(f"{__name__}.kafka")
"""The consumer's errors, as its error callback hears them (repeats collapsed, see
`behest.logs`)."""
librdkafka_log = logging.getLogger("behest.librdkafka")
"""librdkafka's own log lines (reconnect attempts and the like; the errors among them also
reach the projector's error callback, which logs each kind once)."""

DEFAULT_BATCH_SIZE: Final = 5000
"""Records per batch at most (one WriteBatch per partition store). A batch takes only what
librdkafka has fetched already, so live traffic comes in small ones; while catching up,
5000 (2.5x the former 2000) cut the fold's instructions per event by 9%: per-run work
(state read, encode, index, head) is shared by more events."""
FENCES_FORGIVEN: Final = 3
"""Fencings of this static member within `FENCE_WINDOW` seconds that it rejoins after; one
more is a real second holder of its id (each join fences the other), and stops it."""
FENCE_WINDOW: Final = 600.0
COMMIT_EVERY: Final = 1.0
"""Seconds between Kafka offset commits while batches come full (catching up): they are
for lag monitoring only (RocksDB holds the offsets), and one per batch cost ~3% of a
rebuild. A short batch or one that reaches the log end (caught up), a revocation and
leaving commit at once."""


class Projector:
    """Runs a projection as a consumer group member, writing its RocksDB exactly once.

    `Projector(settings).run()` folds until `stop()` (or `stop_event`) is set; the CLI sets
    it on SIGINT/SIGTERM. A partition's store opens when the partition is assigned: one held
    by another process (another projector of the same state dir in another group) fails with
    `StateLockedError`. In the same process the query layer may read `projector.store`, a
    `StoreSet` over this projector's stores (the served generation, followed, while it
    builds another one).

    It joins the group as a static member (`behest.fold.membership`) unless
    `settings.static_membership` is off, so a restart takes its partitions back at once;
    `worker` tells apart projectors of one projection sharing a state dir (a second one
    without its own `worker` fails at once with `StateLockedError`).
    """

    def __init__(
        self,
        settings: Settings,
        projection: Projection[Any] | None = None,
        *,
        group_id: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        on_progress: Callable[[ProjectorMetrics], None] | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
        poll_timeout: float = 0.5,
        metadata_timeout: float = 10.0,
        worker: str | None = None,
    ) -> None:
        if projection is None:
            from behest.projections.run_state import RunStateProjection

            projection = RunStateProjection()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.settings = settings
        self.projection = projection
        self.topic = settings.topic
        self.group_id = group_id or f"behest.{projection.name}"
        self.layout = Layout.of(settings.state_dir, projection.name)
        self.path: Path = self.layout.root
        self.version = projection_version(projection)
        self.batch_size = batch_size
        self.snapshot_every = snapshot_every
        self.on_progress = on_progress
        self.on_batch = on_batch
        """Called with each batch's result (its new states) once the batch is written: the
        place for effects such as exporting (the otel projection's spans)."""
        self.poll_timeout = poll_timeout
        self.metadata_timeout = metadata_timeout
        self._stopping = threading.Event()
        self._dead_letters = DeadLetterSender(settings)
        self._errors_seen: set[int] = set()
        self._uncommitted: dict[int, int] = {}
        self._committed_at = 0.0
        self._heartbeat = HeartbeatWriter(
            heartbeat_path(settings.state_dir, projection.name, worker)
        )
        self._schemas = SchemaWait(
            settings,
            lambda: self._generations.stores(),  # writer schemas live in every open store
            group_id=f"{self.group_id}.schemas",
            librdkafka_log=librdkafka_log,
        )
        self._generations = Generations(
            self.layout,
            projection,
            topic=self.topic,
            member=new_member_id(),
            snapshot_every=snapshot_every,
            hold=self._schemas.hold,
            decode=framing_decoder(settings),  # Confluent framing too, with a registry
        )
        self._leaving = False
        self._fenced_at: list[float] = []
        self._identity: StaticIdentity | None = None
        if settings.static_membership and "group.instance.id" not in settings.kafka_config:
            self._identity = StaticIdentity(settings.state_dir, projection.name, worker)
        self._progress = Progress(projection.name, self.group_id, self.topic, self.instance_id)
        if not self.layout.is_legacy() and self.layout.current() is None:
            self._generations.first()

    # --- what readers may ask -----------------------------------------------------------------

    @property
    def store(self) -> StoreSet:
        """The stores for in-process readers (read methods only: this is their writer)."""
        return self._generations.view

    @property
    def metrics(self) -> ProjectorMetrics:
        """A consistent copy of the counters, safe to read from another thread."""
        return self._progress.copy()

    def folded_position(self, partition: int) -> int:
        """Next offset of `partition` this store has folded (0: nothing yet).

        A produced record at `offset` is readable once `folded_position(p) > offset`.
        """
        return self._progress.position(partition)

    def stop(self) -> None:
        """Ask `run()` to finish the batch in hand, write it and return (signal-safe)."""
        self._stopping.set()

    # --- lifecycle ----------------------------------------------------------------------------

    def run(
        self, *, until_caught_up: bool = False, stop_event: threading.Event | None = None
    ) -> ProjectorMetrics:
        """Consume and fold until stopped, or, with `until_caught_up`, until every owned
        partition is folded up to the high watermark it had when `run` began. A generation
        that is not served yet is built first and switched to once caught up."""
        return self._run(until_caught_up=until_caught_up, stop_event=stop_event, rebuild=False)

    def rebuild(
        self, *, until_caught_up: bool = False, stop_event: threading.Event | None = None
    ) -> ProjectorMetrics:
        """Fold the whole log again from offset 0 into a new generation, beside the served
        one, which readers keep reading until the new one has caught up and is switched to
        (the old one stays for `behest generations rollback` until dropped)."""
        self._progress.restart()
        return self._run(until_caught_up=until_caught_up, stop_event=stop_event, rebuild=True)

    def _run(
        self, *, until_caught_up: bool, stop_event: threading.Event | None, rebuild: bool
    ) -> ProjectorMetrics:
        def stopped() -> bool:
            return self._stopping.is_set() or bool(stop_event and stop_event.is_set())

        consumer = Consumer(self._consumer_config())
        codec.on_published_schema(self._schemas.keep)
        try:
            partitions = topic_partitions(consumer, self.settings, self.metadata_timeout)
            writer = self._prepare(consumer, partitions, rebuild=rebuild)
            if not writer.is_served():
                if not self._build(consumer, writer, partitions, stopped) or until_caught_up:
                    return self.metrics
                self._leave(consumer)
                consumer = Consumer(self._consumer_config())
            targets = self._log_end_offsets(consumer, partitions) if until_caught_up else None
            self._subscribe(consumer)
            while not stopped():
                try:
                    idle = self._step(consumer)
                except MemberFencedError as fenced:
                    consumer = self._rejoin(consumer, fenced)
                    continue
                if not writer.is_served():
                    self._generations.log_served_elsewhere(writer)
                    break
                if targets is not None and self._caught_up(consumer, targets, idle=idle):
                    break
        finally:
            codec.on_published_schema(None)
            self._stopping.clear()  # a stop asked for before or during this run ends it only
            self._leave(consumer)
        return self.metrics

    def _subscribe(self, consumer: Consumer) -> None:
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _rejoin(self, consumer: Consumer, fenced: MemberFencedError) -> Consumer:
        """A new consumer in the group, after the broker fenced this one off.

        A broker can fence a static member by its own `group.instance.id` when the answer
        to its join was lost, as it is when the group coordinator moves (apache/kafka
        #23542): no reason to stop folding. The fenced consumer is dead (librdkafka's
        fatal error), so its partitions count as lost and a new one joins with the same
        id. A real second holder of the id fences this one again at once: after
        `FENCES_FORGIVEN` fencings in `FENCE_WINDOW` seconds, `fenced` is raised.
        """
        now = time.monotonic()
        self._fenced_at = [t for t in self._fenced_at if now - t < FENCE_WINDOW] + [now]
        if len(self._fenced_at) > FENCES_FORGIVEN:
            raise fenced
        log.warning(
            "the broker fenced member %s off (%d time(s) in %.0f s): rejoining the group",
            self.instance_id,
            len(self._fenced_at),
            FENCE_WINDOW,
        )
        held = [TopicPartition(self.topic, p) for p in self.metrics.assigned]
        if held:
            self._on_lost(consumer, held)
        self._errors_seen.clear()
        with contextlib.suppress(KafkaException, RuntimeError):  # it may refuse: it is dead
            consumer.close()
        rejoined = Consumer(self._consumer_config())
        self._subscribe(rejoined)
        return rejoined

    def _step(self, consumer: Consumer) -> bool:
        """Consume one batch and fold it; True if there was nothing to consume."""
        messages = self._next_batch(consumer)
        records = self._usable(messages) if messages else []
        if records:
            self._process(consumer, records)
        elif not messages:  # idle: what full batches left uncommitted goes now
            self._commit(consumer, now=True)
        if self._schemas.waiting:
            self._resume_ready(consumer)
        self._progress.measure_lag(  # the watermarks librdkafka cached on its last fetch
            lambda p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)[1]
        )
        self._heartbeat.beat(self._progress.heartbeat)
        writer = self._generations.writer
        if writer is not None:
            writer.heartbeat()
        if self.on_progress is not None:
            self.on_progress(self.metrics)
        return not messages

    def _leave(self, consumer: Consumer) -> None:
        """Close the consumer; the stores stay open for in-process readers, unclaimed."""
        self._leaving = True
        try:
            self._commit(consumer, now=True)
            consumer.close()
        finally:
            self._leaving = False
            self._schemas.waiting.clear()
            self._progress.left()
            writer = self._generations.writer
            if writer is not None:
                writer.release()
            beat = self._progress.heartbeat(time.time(), self._heartbeat.started_at, stopped=True)
            self._heartbeat.write(beat)

    # --- generations (`behest.fold.bluegreen`) ------------------------------------------------

    def _prepare(
        self, consumer: Consumer, partitions: list[int], *, rebuild: bool
    ) -> GenerationWriter:
        """The writer of the generation to write, its counters started over if it is new."""
        writer, fresh = self._generations.prepare(
            partitions, rebuild=rebuild, targets=lambda: self._log_end_offsets(consumer, partitions)
        )
        self._progress.writing(writer.generation, building=not writer.is_served(), fresh=fresh)
        return writer

    # --- building a new generation ----------------------------------------------------------

    def _build(
        self,
        consumer: Consumer,
        writer: GenerationWriter,
        partitions: list[int],
        stopped: Callable[[], bool],
    ) -> bool:
        """Fold every partition into the new generation, outside the consumer group, until
        caught up; then switch readers to it. False if stopped first."""
        stored = self._generations.begin_build(partitions)
        self._schemas.attach()
        consumer.assign(
            [TopicPartition(self.topic, p, stored.get(p, OFFSET_BEGINNING)) for p in partitions]
        )
        self._progress.assigned(partitions, stored, rebalance=False)
        start = writer.manifest.targets
        while not stopped():
            idle = self._step(consumer)
            live = {}
            for partition in partitions:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
                live[partition] = max(high, start.get(partition, 0))
            if self._caught_up(consumer, live, idle=idle):
                self._generations.switch_to(writer)
                self._progress.built()
                return True
        return False

    def close(self) -> None:
        """Flush dead letters in flight and close the stores (releasing their locks)."""
        self._dead_letters.close()
        self._schemas.close()
        self._generations.close()
        self._release_identity()

    def _release_identity(self) -> None:
        if self._identity is not None:
            self._identity.release()
            self._identity = None

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Kafka --------------------------------------------------------------------------------

    @property
    def instance_id(self) -> str | None:
        """This projector's `group.instance.id` (None: a dynamic member)."""
        if self._identity is not None:
            return self._identity.id
        configured = self.settings.kafka_config.get("group.instance.id")
        return str(configured) if configured else None

    def _consumer_config(self) -> dict[str, Any]:
        return consumer_config(
            self.settings,
            group_id=self.group_id,
            instance_id=None if self._identity is None else self._identity.id,
            on_error=self._on_error,
            logger=librdkafka_log,
        )

    def _log_end_offsets(self, consumer: Consumer, partitions: list[int]) -> dict[int, int]:
        return log_end_offsets(consumer, self.topic, partitions, self.metadata_timeout)

    def _on_error(self, error: KafkaError) -> None:
        """Log each kind of client error once until a batch succeeds (librdkafka retries
        on its own, reporting every failed attempt)."""
        if error.code() not in self._errors_seen:
            self._errors_seen.add(error.code())
            kafka_log.warning("kafka: %s", error.str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Open each new partition's store and seek to its next offset (or the beginning)."""
        writer = self._generations.writing()
        wanted = {tp.partition for tp in partitions}
        keep = set(writer.owned) | wanted  # others are open from an earlier run: close them
        writer.remove([p for p in writer.stores.partitions() if p not in keep])
        stored = writer.add(sorted(wanted))
        self._schemas.attach()
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)
        self._progress.assigned(wanted, stored, rebalance=True)
        log.info(
            "assigned %s: resuming at %s",
            tuple(sorted(wanted)),
            {tp.partition: stored.get(tp.partition, 0) for tp in partitions},
        )

    def _on_revoke(
        self, consumer: Consumer, partitions: list[TopicPartition], *, lost: bool = False
    ) -> None:
        # Every batch is written before the next consume, so nothing is in flight here.
        # A revoked partition's store closes (its next owner may be another process on this
        # state dir); when this projector leaves, they stay open for its in-process readers.
        self._commit(consumer, now=True)
        with contextlib.suppress(KafkaException):  # a fenced consumer cannot; it is closed next
            consumer.unassign()
        self._schemas.forget([tp.partition for tp in partitions])
        writer = self._generations.writer
        if writer is not None:
            writer.remove([tp.partition for tp in partitions], close=not self._leaving)
        self._progress.revoked([tp.partition for tp in partitions], lost=lost)
        log.info("%s %s", "lost" if lost else "revoked", sorted(tp.partition for tp in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us (session expired): as a revocation, counted apart."""
        self._on_revoke(consumer, partitions, lost=True)

    def _next_batch(self, consumer: Consumer) -> list[Any]:
        """Up to `batch_size` records: waits (up to `poll_timeout`) only for the first, then
        takes what librdkafka has already fetched. `consume(n, timeout)` alone would hold a
        partial batch for the whole timeout, which every live reader (`watch`, read-your-
        writes) would wait out on a lightly loaded topic."""
        first = consumer.poll(self.poll_timeout)
        if first is None:
            return []
        if self.batch_size == 1:
            return [first]
        return [first, *consumer.consume(num_messages=self.batch_size - 1, timeout=0)]

    def _usable(self, messages: list[Any]) -> list[Any]:
        """The records of a consume call; errors are raised or logged."""
        records = [m for m in messages if m.error() is None]
        if len(records) == len(messages):
            return records
        for message in messages:
            error = message.error()
            if error is None or error.code() == KafkaError._PARTITION_EOF:
                continue
            if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicMissingError(
                    f"the topic {self.topic!r} disappeared: run `behest topics create`, "
                    "then `behest project --rebuild`"
                )
            refused = membership_refused(
                error, self.settings, group_id=self.group_id, instance_id=self.instance_id
            )
            if refused is not None:
                raise refused
            if error.fatal() or error.code() == KafkaError._FATAL:
                raise BehestError(f"fatal Kafka consumer error: {error.str()}")
            log.warning("consume: %s", error.str())
        return records

    def _process(self, consumer: Consumer, records: list[Any]) -> None:
        started = time.perf_counter()
        with fold_span(records, self.topic):  # linked to the producers' spans, if traced
            writer = self._generations.writing()
            result = writer.process(records, dead_letter=self._dead_letters.send)
        if result.held:
            self._hold(consumer, result.held)
        elapsed = time.perf_counter() - started
        self._errors_seen.clear()
        self._progress.batch(result, elapsed, _folded_at(records, result.positions))
        if not self._progress.building:  # outside the group, its committed offsets are not ours
            self._uncommitted.update(result.positions)
            self._commit(
                consumer,
                now=len(records) < self.batch_size or self._at_end(consumer, result.positions),
            )
        if self.on_batch is not None:
            self.on_batch(result)

    def _at_end(self, consumer: Consumer, positions: dict[int, int]) -> bool:
        """Whether a batch folded its partitions up to the log end librdkafka last saw: a
        full batch that ends the backlog commits at once, not a poll timeout later (when
        the next poll comes back empty), so the group's lag reads 0 as soon as it is."""
        for partition, position in positions.items():
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), cached=True
            )
            if high < 0 or position < high:
                return False
        return bool(positions)

    def _commit(self, consumer: Consumer, *, now: bool = False) -> None:
        """Commit the folded positions to Kafka, at most every `COMMIT_EVERY` s unless `now`."""
        if not self._uncommitted:
            return
        clock = time.monotonic()
        if not now and clock - self._committed_at < COMMIT_EVERY:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in self._uncommitted.items()]
        self._uncommitted.clear()
        self._committed_at = clock
        # for lag monitoring only: best effort (RuntimeError: the consumer is closed)
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.commit(offsets=offsets, asynchronous=True)

    def _hold(self, consumer: Consumer, held: dict[int, int]) -> None:
        """Stop each partition at the record that waits for its writer schema."""
        for partition, offset in held.items():
            tp = TopicPartition(self.topic, partition, offset)
            consumer.pause([tp])
            consumer.seek(tp)

    def _resume_ready(self, consumer: Consumer) -> None:
        """Resume held partitions whose schema arrived or whose wait is over."""
        ready = self._schemas.ready()
        if ready:
            consumer.resume([TopicPartition(self.topic, p, o) for p, o in ready])

    def _caught_up(self, consumer: Consumer, targets: dict[int, int], *, idle: bool) -> bool:
        """Whether every owned partition is folded up to its target.

        A partition whose last offsets are not records (transaction markers, compacted or
        aborted records) never shows them to us; when idle, the consumer's own position,
        which moves past them, settles it.
        """
        behind = self._progress.behind(targets)
        if behind is None:
            return False
        if not behind:
            return True
        if not idle:
            return False
        current = consumer.position([TopicPartition(self.topic, p) for p in behind])
        return all(tp.offset >= targets.get(tp.partition, 0) for tp in current)


def _folded_at(records: list[Any], positions: dict[int, int]) -> dict[int, float]:
    """The log time (Unix s) of each partition's last record folded, the last one below its
    new position (a record held for its schema is not folded), for the lag clock; read
    from the batch's end: a handful of records, not the batch."""
    found: dict[int, float] = {}
    left = dict(positions)
    for record in reversed(records):
        partition = record.partition()
        if partition in left and record.offset() < left[partition]:
            del left[partition]
            kind, millis = record.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE:
                found[partition] = millis / 1000
            if not left:
                break
    return found
