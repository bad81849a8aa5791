"""The Projector: the Kafka runtime that folds the event log into a projection's RocksDB.

Exactly once without Kafka transactions: every batch of records becomes ONE RocksDB
`WriteBatch` (built by `behest.fold.engine.BatchFolder`) holding the new states, the run's
events, snapshots, index changes, per-run heads and the next offset of every partition the
batch touched. On (re)assignment the consumer seeks to the offsets stored in RocksDB, so
after any crash it resumes exactly where its last write left off. Kafka's committed offsets
are written too, but only so that standard tools can show the group's lag.

Several projectors in one consumer group split the partitions, each folding its own into
its own RocksDB. When a partition moves away in a rebalance, the runs it had folded stay
in the old owner's store as they were; should the partition come back, that store resumes
from its own stored offset. `ProjectorMetrics.assigned` says what an instance owns now.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
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
    ConfigError,
    KafkaUnavailableError,
    TopicMissingError,
)
from behest.fold.deadletter import DeadLetterSender
from behest.fold.engine import DEFAULT_SNAPSHOT_EVERY, BatchFolder, BatchResult
from behest.fold.heartbeat import Heartbeat, HeartbeatWriter, heartbeat_path
from behest.fold.membership import INSTANCE_ID_FILE, StaticIdentity
from behest.fold.progress import LagClock, ProjectorMetrics
from behest.fold.projection import Projection
from behest.fold.schemas import SchemaWait
from behest.fold.store import StateStore
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

DEFAULT_BATCH_SIZE: Final = 2000


class Projector:
    """Runs a projection as a consumer group member, writing its RocksDB exactly once.

    `Projector(settings).run()` folds until `stop()` (or `stop_event`) is set; the CLI sets
    it on SIGINT/SIGTERM. The store opens at construction, so a second projector on the
    same state directory fails at once with `StateLockedError`. In the same process the
    query layer may read `projector.store` (RocksDB reads are safe beside its writer;
    `rebuild()` replaces the store object, so readers should ask for it again after one).

    It joins the group as a static member (`behest.fold.membership`) unless
    `settings.static_membership` is off, so a restart takes its partitions back at once;
    `worker` tells apart projectors of one projection sharing a state dir.
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
        self.path: Path = settings.state_dir / projection.name
        self.batch_size = batch_size
        self.snapshot_every = snapshot_every
        self.on_progress = on_progress
        self.on_batch = on_batch
        """Called with each batch's result (its new states) once the batch is written: the
        place for effects such as exporting (the otel projection's spans)."""
        self.poll_timeout = poll_timeout
        self.metadata_timeout = metadata_timeout
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._assigned: set[int] = set()
        self._dead_letters = DeadLetterSender(settings)
        self._errors_seen: set[int] = set()
        self._metrics = ProjectorMetrics(projection.name, self.group_id, self.topic)
        self._lag_clock = LagClock()
        self._heartbeat = HeartbeatWriter(
            heartbeat_path(settings.state_dir, projection.name, worker)
        )
        self._schemas = SchemaWait(
            settings,
            lambda: self._store,
            group_id=f"{self.group_id}.schemas",
            librdkafka_log=librdkafka_log,
        )
        self._identity: StaticIdentity | None = None
        self._open_store()
        if settings.static_membership and "group.instance.id" not in settings.kafka_config:
            try:
                self._identity = StaticIdentity(settings.state_dir, projection.name, worker)
            except BaseException:
                self._store.close()
                raise
        self._metrics.instance_id = self.instance_id

    def _open_store(self) -> None:
        self._store = StateStore(self.path)
        self._folder = BatchFolder(
            self._store,
            self.projection,
            topic=self.topic,
            snapshot_every=self.snapshot_every,
            hold=self._schemas.hold,
            decode=framing_decoder(self.settings),  # Confluent framing too, with a registry
        )
        self._schemas.attach()
        self._metrics.positions = self._store.stored_offsets(self.topic)

    # --- what readers may ask -----------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        """The open store, for in-process readers (read methods only: this is its writer)."""
        return self._store

    @property
    def metrics(self) -> ProjectorMetrics:
        """A consistent copy of the counters, safe to read from another thread."""
        with self._lock:
            return self._metrics.copy()

    def folded_position(self, partition: int) -> int:
        """Next offset of `partition` this store has folded (0: nothing yet).

        A produced record at `offset` is readable once `folded_position(p) > offset`.
        """
        with self._lock:
            return self._metrics.positions.get(partition, 0)

    def stop(self) -> None:
        """Ask `run()` to finish the batch in hand, write it and return (signal-safe)."""
        self._stopping.set()

    # --- lifecycle ----------------------------------------------------------------------------

    def run(
        self, *, until_caught_up: bool = False, stop_event: threading.Event | None = None
    ) -> ProjectorMetrics:
        """Consume and fold until stopped, or, with `until_caught_up`, until every owned
        partition is folded up to the high watermark it had when `run` began."""
        consumer = Consumer(self._consumer_config())
        codec.on_published_schema(self._schemas.keep)
        try:
            partitions = self._check_topic(consumer)
            targets = self._watermarks(consumer, partitions) if until_caught_up else None
            consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not (self._stopping.is_set() or (stop_event and stop_event.is_set())):
                messages = self._next_batch(consumer)
                records = self._usable(messages) if messages else []
                if records:
                    self._process(consumer, records)
                if self._schemas.waiting:
                    self._resume_ready(consumer)
                self._update_lag(consumer)
                self._heartbeat.beat(self._beat)
                if self.on_progress is not None:
                    self.on_progress(self.metrics)
                if targets is not None and self._caught_up(consumer, targets, idle=not messages):
                    break
        finally:
            codec.on_published_schema(None)
            self._schemas.waiting.clear()
            self._stopping.clear()  # a stop asked for before or during this run ends it only
            with self._lock:
                self._assigned.clear()
                self._metrics.assigned = ()
            consumer.close()
            self._heartbeat.write(self._beat(time.time(), self._heartbeat.started_at, stopped=True))
        return self.metrics

    def rebuild(
        self, *, until_caught_up: bool = False, stop_event: threading.Event | None = None
    ) -> ProjectorMetrics:
        """Drop this projection's store and fold the whole log again from offset 0."""
        self._store.close()
        shutil.rmtree(self.path, ignore_errors=True)
        with self._lock:
            self._metrics = ProjectorMetrics(
                self.projection.name, self.group_id, self.topic, self.instance_id
            )
        self._lag_clock = LagClock()
        self._open_store()
        return self.run(until_caught_up=until_caught_up, stop_event=stop_event)

    def close(self) -> None:
        """Flush dead letters in flight and close the store (releasing its lock)."""
        self._dead_letters.close()
        self._schemas.close()
        self._store.close()
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

    def _membership_config(self) -> dict[str, Any]:
        """Static membership and the session timeout; what BEHEST_KAFKA_CONFIG sets wins."""
        session_ms = round(self.settings.session_timeout * 1000)
        config: dict[str, Any] = {
            "session.timeout.ms": session_ms,
            # librdkafka's default (3 s) against a short session would leave one beat spare
            "heartbeat.interval.ms": max(min(3000, session_ms // 3), 100),
        }
        if self._identity is not None:
            config["group.instance.id"] = self._identity.id
        return {k: v for k, v in config.items() if k not in self.settings.kafka_config}

    def _consumer_config(self) -> dict[str, Any]:
        # Offsets live in RocksDB: librdkafka must neither commit nor remember them itself.
        return self.settings.librdkafka(
            **self._membership_config(),
            **{
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                "error_cb": self._on_error,
                "logger": librdkafka_log,
            },
        )

    def _on_error(self, error: KafkaError) -> None:
        """Log each kind of client error once until a batch succeeds (librdkafka retries
        on its own, reporting every failed attempt)."""
        if error.code() not in self._errors_seen:
            self._errors_seen.add(error.code())
            kafka_log.warning("kafka: %s", error.str())

    def _check_topic(self, consumer: Consumer) -> list[int]:
        """The topic's partitions; clear errors when there is no broker or no topic."""
        bootstrap = self.settings.bootstrap
        try:
            metadata = consumer.list_topics(timeout=self.metadata_timeout)
        except KafkaException as error:
            raise KafkaUnavailableError(
                f"no Kafka broker answered at {bootstrap} within {self.metadata_timeout:g} s "
                f"({error.args[0].str() if error.args else error}): start one with "
                "`behest broker start`, or point BEHEST_BOOTSTRAP_SERVERS at yours"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise TopicMissingError(
                f"the topic {self.topic!r} does not exist on {bootstrap}: "
                "run `behest topics create` (or set BEHEST_TOPIC to the topic you use)"
            )
        if self.settings.dlq_topic not in metadata.topics:
            log.warning(
                "the dead-letter topic %r does not exist; `behest topics create` makes it",
                self.settings.dlq_topic,
            )
        return sorted(topic.partitions)

    def _watermarks(self, consumer: Consumer, partitions: list[int]) -> dict[int, int]:
        """Per partition, the offset to reach to be caught up (0 for an empty partition)."""
        targets = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=self.metadata_timeout
            )
            targets[partition] = high if high > low else 0
        return targets

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Seek each new partition to RocksDB's next offset, or to the beginning."""
        stored = self._store.stored_offsets(self.topic)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)
        with self._lock:
            self._assigned = {tp.partition for tp in partitions}
            self._metrics.assigned = tuple(sorted(self._assigned))
            self._metrics.positions.update(stored)
            self._metrics.assignments += 1
        log.info(
            "assigned %s: resuming at %s",
            self._metrics.assigned,
            {tp.partition: stored.get(tp.partition, 0) for tp in partitions},
        )

    def _on_revoke(
        self, consumer: Consumer, partitions: list[TopicPartition], *, lost: bool = False
    ) -> None:
        # Every batch is written before the next consume, so nothing is in flight here.
        consumer.unassign()
        self._schemas.forget([tp.partition for tp in partitions])
        with self._lock:
            self._assigned.clear()
            self._metrics.assigned = ()
            self._metrics.lag.clear()
            self._metrics.lag_seconds.clear()
            if lost:
                self._metrics.losses += 1
            else:
                self._metrics.revocations += 1
            for tp in partitions:
                self._lag_clock.forget(tp.partition)
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
            refused = self._membership_refused(error)
            if refused is not None:
                raise refused
            if error.fatal() or error.code() == KafkaError._FATAL:
                raise BehestError(f"fatal Kafka consumer error: {error.str()}")
            log.warning("consume: %s", error.str())
        return records

    def _membership_refused(self, error: KafkaError) -> BehestError | None:
        """The errors of a group membership that retrying cannot mend, said plainly."""
        if error.code() == KafkaError.INVALID_SESSION_TIMEOUT:
            return ConfigError(
                f"the broker refuses a session timeout of {self.settings.session_timeout:g} s "
                "(it accepts group.min.session.timeout.ms to group.max.session.timeout.ms, "
                "6 to 1800 s by default): set --session-timeout or BEHEST_SESSION_TIMEOUT "
                "within them"
            )
        # a consumer hears of its fencing only as `_FATAL`, the cause in the text
        if error.code() == KafkaError.FENCED_INSTANCE_ID or "fenced" in error.str():
            return ConfigError(
                f"another projector joined group {self.group_id!r} as member "
                f"{self.instance_id}, so the broker fenced this one off: is a copy of the "
                f"state dir {self.settings.state_dir} in use elsewhere? Delete the "
                f"{INSTANCE_ID_FILE} file in the copy, or use --dynamic-membership there"
            )
        return None

    def _process(self, consumer: Consumer, records: list[Any]) -> None:
        started = time.perf_counter()
        with fold_span(records, self.topic):  # linked to the producers' spans, if traced
            result = self._folder.process(records, dead_letter=self._dead_letters.send)
        if result.held:
            self._hold(consumer, result.held)
        elapsed = time.perf_counter() - started
        self._errors_seen.clear()
        with self._lock:
            m = self._metrics
            m.records += result.records
            m.events_folded += result.folded
            m.duplicates += result.duplicates
            m.gaps += result.gaps
            m.late_repaired += result.late_repaired
            m.dead_letters += len(result.dead_letters)
            m.tombstones += result.tombstones
            m.batches += 1
            m.last_batch_at = time.time()
            m.last_batch_seconds = elapsed
            m.batch_latency.observe(elapsed)
            m.positions.update(result.positions)
            self._note_fold_times(records, result.positions)
        offsets = [TopicPartition(self.topic, p, o) for p, o in result.positions.items()]
        with contextlib.suppress(KafkaException):  # for lag monitoring only: best effort
            consumer.commit(offsets=offsets, asynchronous=True)
        if self.on_batch is not None:
            self.on_batch(result)

    def _note_fold_times(self, records: list[Any], positions: dict[int, int]) -> None:
        """Tell the lag clock the log time of each partition's last record folded, the
        last one below its new position (a record held for its schema is not folded);
        read from the batch's end: a handful of records, not the batch."""
        left = dict(positions)
        for record in reversed(records):
            partition = record.partition()
            if partition in left and record.offset() < left[partition]:
                del left[partition]
                kind, millis = record.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE:
                    self._lag_clock.folded(partition, millis / 1000)
                if not left:
                    return

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

    def _update_lag(self, consumer: Consumer) -> None:
        """Lag of owned partitions, in records from the watermarks librdkafka cached on its
        last fetch, and in seconds from the lag clock (`behest.fold.progress`)."""
        now = time.time()
        with self._lock:
            positions = self._metrics.positions
            lag: dict[int, int] = {}
            seconds: dict[int, float] = {}
            for partition in self._assigned:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
                if high >= 0:
                    lag[partition] = max(high - positions.get(partition, 0), 0)
                    behind = self._lag_clock.seconds(partition, lag[partition], now)
                    if behind is not None:
                        seconds[partition] = behind
            self._metrics.lag = lag
            self._metrics.lag_seconds = seconds

    def _beat(self, now: float, started_at: float, *, stopped: bool = False) -> Heartbeat:
        """This projector's heartbeat as of now (`behest.fold.heartbeat`)."""
        with self._lock:
            m = self._metrics
            return Heartbeat(
                projection=m.projection,
                pid=os.getpid(),
                at=now,
                started_at=started_at,
                instance=m.instance_id,
                stopped=stopped,
                assigned=m.assigned,
                lag=dict(m.lag),
                lag_seconds=dict(m.lag_seconds),
            )

    def _caught_up(self, consumer: Consumer, targets: dict[int, int], *, idle: bool) -> bool:
        """Whether every owned partition is folded up to its target.

        A partition whose last offsets are not records (transaction markers, compacted or
        aborted records) never shows them to us; when idle, the consumer's own position,
        which moves past them, settles it.
        """
        with self._lock:
            if not self._assigned:
                return False
            positions = self._metrics.positions
            behind = [p for p in self._assigned if positions.get(p, 0) < targets.get(p, 0)]
        if not behind:
            return True
        if not idle:
            return False
        current = consumer.position([TopicPartition(self.topic, p) for p in behind])
        return all(tp.offset >= targets.get(tp.partition, 0) for tp in current)
