"""Writer schemas that travel with the events: the projector's side of `<topic>.schemas`.

A producer publishes its writer schema to the compacted `<topic>.schemas` topic (key: the
8 fingerprint bytes of the single-object header as 16 lowercase hex characters; value: the
schema's JSON) before its first event. A record whose fingerprint the projector does not
know makes it read that topic to its end; a schema found there is checked against the
current one (Avro's resolution rules, `behest.compat`) and then used to decode.

When the schema is not there yet, the record's partition waits: the batch engine stops that
partition at the record (`SchemaWait.hold`), the projector seeks it back and pauses it, and
every other partition goes on. The topic is read again at most every `refresh_interval`
seconds; once the schema arrives the partition resumes from the record, so each run's
events are still folded in log order. A fingerprint that has no schema after
`Settings.schema_wait` seconds (BEHEST_SCHEMA_WAIT, default 30) is given up on: its records
are dead-lettered as unknown from then on (without waiting again), until a later read of
the topic finds the schema. A schema the current one cannot read is refused, and its records
are dead-lettered with the reason.

Schemas used to fold are kept in the `schemas` family of each partition store, so a reader
of the stores (`behest serve` in another process) decodes the stored events without Kafka.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from behest import codec
from behest.config import Settings
from behest.errors import CodecError
from behest.fold.engine import LogRecord
from behest.fold.store import StateStore

__all__ = ["SchemaWait"]

log = logging.getLogger(__name__)

READ_TIMEOUT: Final = 5.0
"""Longest one read of the schemas topic to its end may take."""


class SchemaWait:
    """Finds unknown writer schemas on `<topic>.schemas` and holds partitions that wait
    for one. Used from the projector's thread only."""

    def __init__(
        self,
        settings: Settings,
        stores: Callable[[], list[StateStore]],
        *,
        group_id: str,
        refresh_interval: float = 0.5,
        librdkafka_log: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.schemas_topic
        self.wait = settings.schema_wait
        self.refresh_interval = refresh_interval
        self.waiting: dict[int, tuple[int, bytes]] = {}
        """Held partitions: partition → (offset of the waiting record, its fingerprint)."""
        self._stores = stores
        self._group_id = group_id
        self._log = librdkafka_log or log
        self._consumer: Consumer | None = None
        self._positions: dict[int, int] = {}
        self._deadlines: dict[bytes, float] = {}
        self._kept: set[bytes] = set()
        self._last_read = float("-inf")
        self._missing_noted = False

    # --- the engine's hook and the projector's loop -------------------------------------------

    def hold(self, record: LogRecord) -> bool:
        """For a record whose writer schema is unknown: True to hold its partition at it
        (the schema may still come), False to decode it again now (the schema was found,
        was refused, or its wait is over)."""
        fp = codec.header_fingerprint(record.value())
        if fp is None:
            return False
        first = fp not in self._deadlines
        self.read(force=first)
        if _settled(fp):
            return False
        now = time.monotonic()
        deadline = self._deadlines.setdefault(fp, now + self.wait)
        if now >= deadline:
            return False
        if first:
            log.warning(
                "partition %d waits at offset %d for writer schema %s on %r (up to %g s; "
                "the other partitions go on)",
                record.partition(),
                record.offset(),
                fp.hex(),
                self.topic,
                self.wait,
            )
        self.waiting[record.partition()] = (record.offset(), fp)
        return True

    def ready(self) -> list[tuple[int, int]]:
        """`(partition, offset)` of held partitions that may go on: their schema arrived
        (or was refused), or the wait is over (the record is then dead-lettered)."""
        if not self.waiting:
            return []
        self.read()
        now = time.monotonic()
        done = []
        for partition, (offset, fp) in list(self.waiting.items()):
            if _settled(fp) or now >= self._deadlines.get(fp, 0.0):
                if not _settled(fp):
                    log.warning(
                        "no writer schema %s on %r after %g s: its records are dead-lettered",
                        fp.hex(),
                        self.topic,
                        self.wait,
                    )
                del self.waiting[partition]
                done.append((partition, offset))
        return done

    def forget(self, partitions: list[int]) -> None:
        """Partitions taken away in a rebalance wait no more."""
        for partition in partitions:
            self.waiting.pop(partition, None)

    # --- the store ------------------------------------------------------------------------------

    def attach(self) -> None:
        """Learn the schemas kept in the (new) stores; keep anew what one of them lacks."""
        self._kept.clear()
        for store in self._stores():
            for _, text in store.iter_schemas():
                try:
                    codec.add_writer_schema(text, "kept in the projection's store")
                except CodecError as error:
                    log.warning("a writer schema kept in the store is not usable: %s", error)

    def keep(self, version: codec.SchemaVersion) -> None:
        """Store a published schema an event is folded with (once per store)."""
        if version.fingerprint in self._kept:
            return
        for store in self._stores():  # each partition store, so each can move on its own
            if store.get_schema(version.fingerprint) is None:
                batch = store.batch()
                batch.put_schema(version.fingerprint, version.record()[1])
                store.write(batch)
        self._kept.add(version.fingerprint)

    # --- reading the topic ------------------------------------------------------------------------

    def read(self, *, force: bool = False) -> None:
        """Read `<topic>.schemas` from where the last read stopped to its current end
        (at most every `refresh_interval` seconds unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_read < self.refresh_interval:
            return
        self._last_read = now
        consumer = self._open()
        if consumer is None:
            return
        try:
            ends = self._ends(consumer)
        except KafkaException as error:
            log.warning("cannot read %r: %s", self.topic, error.args[0].str())
            return
        deadline = now + READ_TIMEOUT
        while any(self._positions.get(p, 0) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                log.warning("reading %r took over %g s; going on", self.topic, READ_TIMEOUT)
                return
            for message in consumer.consume(num_messages=500, timeout=0.2):
                problem = message.error()
                if problem is not None:
                    if problem.code() == KafkaError._PARTITION_EOF:  # compaction leaves holes
                        partition, end = message.partition() or 0, message.offset() or 0
                        self._positions[partition] = max(self._positions.get(partition, 0), end)
                    else:
                        log.warning("reading %r: %s", self.topic, problem.str())
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                self._positions[partition] = offset + 1
                self._learn(message.key(), message.value(), offset)

    def _learn(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if value is None:
            return  # a tombstone: schemas are never taken back
        where = f"{self.topic}@{offset}"
        try:
            version = codec.add_writer_schema(value, where)
        except CodecError as error:
            log.warning("%s", error)
            return
        if key is not None and key != version.fingerprint.hex().encode():
            log.warning(
                "%s: key %r is not the schema's fingerprint %s (used all the same)",
                where,
                key,
                version.fingerprint.hex(),
            )

    def _open(self) -> Consumer | None:
        if self._consumer is not None:
            return self._consumer
        consumer = Consumer(
            self.settings.librdkafka(
                **{
                    "group.id": self._group_id,  # never joined nor committed: assign() only
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "logger": self._log,
                }
            )
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=READ_TIMEOUT)
            found = metadata.topics.get(self.topic)
            partitions = [] if found is None or found.error is not None else list(found.partitions)
        except KafkaException:
            partitions = []
        if not partitions:
            consumer.close()
            if not self._missing_noted:
                self._missing_noted = True
                log.warning(
                    "topic %r does not exist, so writer schemas published by producers cannot "
                    "be read: run `behest topics create`",
                    self.topic,
                )
            return None
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        self._positions = dict.fromkeys(partitions, 0)
        self._consumer = consumer
        return consumer

    def _ends(self, consumer: Consumer) -> dict[int, int]:
        ends = {}
        for partition in self._positions:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=READ_TIMEOUT
            )
            ends[partition] = high
        return ends

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _settled(fp: bytes) -> bool:
    return fp in codec.VERSIONS or fp in codec.REFUSED
