"""The batch engine: folds a batch of log records into a projection's store, one atomic write.

Pure of Kafka: it takes records shaped like Kafka's (`LogRecord`) and a `StateStore`, so the
`Projector` (the Kafka runtime) and `behest.testing` (no broker) run the very same code:

    records ─► decode + validate (poison ─► dead letters) ─► per-run sequence check
    (duplicates skipped, conflicts dead-lettered, gaps recorded, late events kept,
    tombstones reset) ─► group per entity ─► one multi-get of states ─► fold (a run with a
    late event re-folded from the snapshot before it) ─► one write (states, events,
    snapshots, index, heads, next offsets)

Run-keyed projections (`RunStateProjection`) also keep each run's events (`run ‖ seq` →
the bytes as on the log), a snapshot every `snapshot_every` events, and delete all of a
run on its tombstone. Projections keyed otherwise (`ToolUsageProjection`, per tool) keep
only their states plus the per-run heads that make them exactly-once; a tombstone resets
the run's head (a later event of that run id starts afresh) but cannot take the run back
out of an aggregate.
"""

from __future__ import annotations

import functools
import logging
import operator
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

from behest.codec import check_record, decode_checked
from behest.errors import CodecError, UnknownSchemaError
from behest.events import EventRecord
from behest.fold.projection import Projection
from behest.fold.refold import (
    EPOCH,
    EVENT,
    LATE,
    RECORD,
    RUN,
    SEQUENCE,
    VALUE,
    EntityFold,
    Folded,
    Item,
    by_sequence,
)
from behest.fold.sequences import HeadCursor, RunHead
from behest.fold.store import StateStore, StoreBatch

__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "HEADER_ERROR",
    "HEADER_OFFSET",
    "HEADER_PARTITION",
    "HEADER_TOPIC",
    "BatchFolder",
    "BatchResult",
    "DeadLetter",
    "LogRecord",
]

log = logging.getLogger(__name__)

S = TypeVar("S")
_sequence_and_value: Callable[[Item], tuple[int, bytes]] = operator.itemgetter(0, 2)

DEFAULT_SNAPSHOT_EVERY: Final = 32
"""A run's state is snapshotted after every 32nd event: `get_at` folds at most 31 events
(~0.3 ms), for about 10% more disk than the events alone."""
_KEY_CACHE_LIMIT: Final = 100_000
MAX_ERROR_CHARS: Final = 1000
"""A dead letter's error text is cut to this (a huge bad key would otherwise repeat in it)."""

HEADER_TOPIC: Final = "behest.source.topic"
HEADER_PARTITION: Final = "behest.source.partition"
HEADER_OFFSET: Final = "behest.source.offset"
HEADER_ERROR: Final = "behest.error"


class LogRecord(Protocol):
    """What a batch fold needs of a Kafka record; `confluent_kafka.Message` is one."""

    def partition(self) -> int: ...

    def offset(self) -> int: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the projection cannot fold, bound for the dead-letter topic as it was."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Where the record came from and why it was refused."""
        return [
            (HEADER_TOPIC, self.topic.encode()),
            (HEADER_PARTITION, str(self.partition).encode()),
            (HEADER_OFFSET, str(self.offset).encode()),
            (HEADER_ERROR, self.error.encode()),
        ]


@dataclass(slots=True)
class BatchResult:
    """What one batch did; `positions` are the next offsets written, per partition.

    `gaps` counts sequence ranges found missing; `late_repaired` the late events folded in
    their place (each fills a gap or part of one); conflicts are among `dead_letters`."""

    records: int = 0
    folded: int = 0
    duplicates: int = 0
    gaps: int = 0
    late_repaired: int = 0
    tombstones: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    held: dict[int, int] = field(default_factory=dict)
    """Partitions stopped at a record waiting for its writer schema: partition → its offset."""
    states: dict[bytes, Any] = field(default_factory=dict)
    """The new state of every entity the batch changed (deleted ones are absent)."""


@dataclass(slots=True)
class _Pass:
    """One batch in progress: the heads as they were and as they become, and the result."""

    result: BatchResult
    before: dict[bytes, RunHead | None]
    cursors: dict[bytes, HeadCursor]
    late: bool = False  # any late event in the batch


def _parse_key(key: bytes | None) -> tuple[str, bytes] | None:
    """`(canonical text, 16 bytes)` of a record key that is a run id, else None."""
    if key is None:
        return None
    try:
        text = key.decode("ascii")
        run = uuid.UUID(text)
    except ValueError:  # UnicodeDecodeError is one
        return None
    return (text, run.bytes) if str(run) == text else None


def _same_run(text: str, run_id: Any) -> bool:
    """Whether the event's run_id names the same UUID as the key (any letter case)."""
    try:
        return uuid.UUID(text) == uuid.UUID(str(run_id))
    except ValueError:
        return False


def _is_missing(cursor: HeadCursor, sequence: int) -> bool:
    return bool(cursor.missing) and RunHead(cursor.last, cursor.missing).is_missing(sequence)


def _positions(records: Sequence[LogRecord], result: BatchResult) -> None:
    """The next offset of each partition: past its last record, or, held for a writer
    schema, at the record held (`_undecodable` set it; the records after it were skipped).
    Worked out once per batch from the end, not stored for every record."""
    positions, held = result.positions, result.held
    left = {record.partition() for record in records} - held.keys() - positions.keys()
    for record in reversed(records):
        if not left:
            break
        partition = record.partition()
        if partition in left:
            left.discard(partition)
            positions[partition] = record.offset() + 1


def _accepted(groups: dict[bytes, list[Item]]) -> dict[tuple[bytes, int, int], bytes]:
    """`(run, sequence, epoch)` -> bytes of every event the batch has accepted so far
    (tombstones aside): what a repeated sequence is compared with."""
    return {
        (item[RUN], item[SEQUENCE], item[EPOCH]): item[VALUE]
        for group in groups.values()
        for item in group
        if item[EVENT] is not None
    }


class BatchFolder(Generic[S]):
    """Folds a batch of log records into a projection's store with one atomic write.

    The single code path of the `Projector` and of `behest.testing`: what a unit test sees
    is what production does. Not thread-safe; one per store (RocksDB has one writer).
    """

    def __init__(
        self,
        store: StateStore,
        projection: Projection[S],
        *,
        topic: str,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        hold: Callable[[LogRecord], bool] | None = None,
        decode: Callable[[bytes], tuple[EventRecord, bytes]] | None = None,
    ) -> None:
        """`hold(record)` is asked about a record whose writer schema is unknown: True
        stops its partition at it for this batch (`BatchResult.held`: the caller reads it
        again later), False decodes it again (dead-lettered if still unknown). Without it,
        such records are dead letters at once."""
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, got {snapshot_every}")
        self.hold = hold
        self.store = store
        self.projection = projection
        self.topic = topic
        self.snapshot_every = snapshot_every
        self._decode = decode
        """Another framing's reader (Schema Registry): the record, and the single-object
        bytes to store for it; None reads single-object only."""
        self._keys: dict[bytes | None, tuple[str, bytes]] = {}
        self._entity = EntityFold(store, projection, snapshot_every)

    def process(
        self,
        records: Sequence[LogRecord],
        *,
        dead_letter: Callable[[list[DeadLetter]], None] | None = None,
    ) -> BatchResult:
        """Fold `records` (in log order) and write the result in one RocksDB write.

        `dead_letter` receives the batch's poison records before the write and must have
        stored them durably when it returns (raise to abort the batch: nothing is written,
        so the records are read again after a restart).
        """
        result, batch = self.fold(records)
        if result.dead_letters and dead_letter is not None:
            dead_letter(result.dead_letters)
        self.store.write(batch)
        return result

    def fold(self, records: Sequence[LogRecord]) -> tuple[BatchResult, StoreBatch]:
        """`process` up to the write: the result and the one batch to write (nothing is
        written yet; the batch's dead letters must be stored durably first)."""
        result = BatchResult(records=len(records))
        heads = self._load_heads(records)
        run = _Pass(result, heads, {key: HeadCursor(head) for key, head in heads.items()})
        groups, pending = self._check(records, run)
        if pending:
            self._resolve(pending, groups, run)
        batch = self.store.batch()
        self._fold(groups, batch, run)
        for key, cursor in run.cursors.items():
            head = cursor.head()
            if cursor.epoch or head != heads[key]:  # a tombstone rewrites it even if equal
                if head is None:
                    batch.delete_head(key)
                else:
                    batch.put_head(key, head)
        _positions(records, result)
        for partition, next_offset in result.positions.items():
            batch.put_offset(self.topic, partition, next_offset)
        return result, batch

    def _dead(self, result: BatchResult, record: LogRecord, error: str) -> None:
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        result.dead_letters.append(
            DeadLetter(
                self.topic, record.partition(), record.offset(), record.key(), record.value(), error
            )
        )

    def _undecodable(
        self, record: LogRecord, value: bytes, error: CodecError, result: BatchResult
    ) -> tuple[Any, bytes] | None:
        """The event (and bytes) of a record that did not decode if its writer schema just
        arrived; else None: its partition is held for the schema, or it is a dead letter."""
        if isinstance(error, UnknownSchemaError) and self.hold is not None:
            if self.hold(record):
                result.records -= 1
                result.held[record.partition()] = record.offset()
                result.positions[record.partition()] = record.offset()
                return None
            try:
                if self._decode is None:
                    event: Any = decode_checked(value)
                else:
                    event, value = self._decode(value)
                    check_record(event)
                return event, value
            except CodecError as again:
                error = again
        self._dead(result, record, str(error))
        return None

    def _load_heads(self, records: Sequence[LogRecord]) -> dict[bytes, RunHead | None]:
        """The heads of every run the batch names, in one multi-get (keys parsed once)."""
        keys = self._keys
        if len(keys) > _KEY_CACHE_LIMIT:
            keys.clear()
        runs = []
        for key in {record.key() for record in records}:
            known = keys.get(key)
            if known is None:
                known = _parse_key(key)
                if known is None:
                    continue
                keys[key] = known
            runs.append(known[1])
        return dict(zip(runs, self.store.get_heads(runs), strict=True))

    # --- the sequence check, in log order -----------------------------------------------------

    def _check(
        self, records: Sequence[LogRecord], run_pass: _Pass
    ) -> tuple[dict[bytes, list[Item]], list[Item]]:
        """Decode, validate and sequence-check every record, in log order.

        Returns the items to fold grouped per entity, and the items under a sequence folded
        before this batch, which a run-keyed projection compares with the stored event
        (`_resolve`). Poison goes to the dead letters; tombstones reset heads (and join
        their run's group when the entity is the run)."""
        projection = self.projection
        run_keyed = projection.run_keyed
        entity_of = projection.key
        keys = self._keys
        result, cursors = run_pass.result, run_pass.cursors
        groups: dict[bytes, list[Item]] = {}
        # (run, sequence, epoch) -> bytes of the events accepted so far: for a run-keyed
        # projection built only when the batch repeats a sequence (from `groups`, which
        # then hold every accepted event), not paid for by every event
        seen: dict[tuple[bytes, int, int], bytes] | None = None if run_keyed else {}
        pending: list[Item] = []
        held = result.held
        decoder = self._decode
        decode, check = decode_checked, check_record
        for record in records:
            if held and record.partition() in held:
                result.records -= 1  # waits for a writer schema: read again from there later
                continue
            key = record.key()
            known = keys.get(key)
            if known is None:
                self._dead(
                    result,
                    record,
                    f"record key {key!r:.200} is not a run id (canonical lowercase UUID text)",
                )
                continue
            text, run = known
            value = record.value()
            cursor = cursors[run]
            if value is None:
                result.tombstones += 1
                cursor.reset()
                if run_keyed:
                    item = (-1, None, b"", record, run, cursor.epoch, False)
                    groups.setdefault(run, []).append(item)
                continue
            try:
                if decoder is None:
                    event: Any = decode(value)  # decoded and checked in one call
                else:
                    event, value = decoder(value)
                    check(event)
            except CodecError as error:
                decoded = self._undecodable(record, value, error, result)
                if decoded is None:
                    continue
                event, value = decoded
            run_id = event["run_id"]
            sequence = event["sequence"]
            if run_id != text and not _same_run(text, run_id):
                self._dead(result, record, f"record key {text} is not the event's run_id {run_id}")
                continue
            if sequence == cursor.last + 1:  # the hot path: the next one, in order
                cursor.last = sequence
                late = False
            elif sequence > cursor.last:
                self._gap(result, text, cursor.last + 1, sequence)
                cursor.move(RunHead(cursor.last, cursor.missing).advance(sequence))
                late = False
            elif _is_missing(cursor, sequence):
                cursor.move(RunHead(cursor.last, cursor.missing).fill(sequence))
                late = run_pass.late = True
            else:  # a sequence folded before: a duplicate or a conflict (or never stored)
                item = (sequence, event, value, record, run, cursor.epoch, False)
                if seen is None:
                    seen = _accepted(groups)
                earlier = seen.get((run, sequence, cursor.epoch))
                if earlier is not None:
                    self._repeat(result, item, earlier)
                elif run_keyed and not cursor.epoch:
                    pending.append(item)
                else:
                    result.duplicates += 1
                continue
            item = (sequence, event, value, record, run, cursor.epoch, late)
            if seen is not None:
                seen[run, sequence, cursor.epoch] = value
            entity = run if run_keyed else entity_of(event)
            if entity is not None:
                group = groups.get(entity)
                if group is None:
                    groups[entity] = [item]
                else:
                    group.append(item)
        return groups, pending

    @staticmethod
    def _gap(result: BatchResult, run: str, first: int, sequence: int) -> None:
        result.gaps += 1
        log.warning(
            "run %s: sequences %d..%d missing (got %d); folded past the gap (a late event "
            "fills it in place)",
            run,
            first,
            sequence - 1,
            sequence,
        )

    def _repeat(self, result: BatchResult, item: Item, folded: bytes) -> None:
        """An event under a sequence already folded: a duplicate when it is the same bytes
        (skipped), a conflict otherwise (dead-lettered)."""
        if item[VALUE] == folded:
            result.duplicates += 1
            return
        self._dead(
            result,
            item[RECORD],
            f"conflict: sequence {item[SEQUENCE]} of run {item[EVENT]['run_id']} was already "
            "folded with different bytes (two events under one sequence); the first one stays",
        )

    def _resolve(
        self, pending: list[Item], groups: dict[bytes, list[Item]], run_pass: _Pass
    ) -> None:
        """Compare each event under an already-folded sequence with the stored one (one
        multi-get). None stored means it was never folded (a gap forgotten, or a store
        older than gap tracking): late after all."""
        stored = self.store.get_events([(item[RUN], item[SEQUENCE]) for item in pending])
        accepted: dict[tuple[bytes, int], bytes] = {}
        for item, data in zip(pending, stored, strict=True):
            earlier = data if data is not None else accepted.get((item[RUN], item[SEQUENCE]))
            if earlier is not None:
                self._repeat(run_pass.result, item, earlier)
                continue
            run_pass.late = True
            accepted[(item[RUN], item[SEQUENCE])] = item[VALUE]
            groups.setdefault(item[RUN], []).append((*item[:LATE], True))

    # --- the fold -----------------------------------------------------------------------------

    def _fold(self, groups: dict[bytes, list[Item]], batch: StoreBatch, run_pass: _Pass) -> None:
        """Fold each entity's events onto its stored state (one multi-get) and stage the
        new states, index changes, and, for runs, their events and snapshots."""
        projection = self.projection
        decode = projection.decode_state
        fold = self._entity.fold
        refuse = functools.partial(self._refuse, run_pass=run_pass)
        entities = list(groups)
        for entity, data in zip(entities, self.store.get_states(entities), strict=True):
            original = None if data is None else decode(data)
            items = groups[entity]
            if not projection.run_keyed:  # across runs: in log order, as they come
                folded = fold(original, items, None, refuse)
                self._stage(entity, original, folded, False, batch, run_pass)
                continue
            epochs = run_pass.cursors[entity].epoch
            base = run_pass.before[entity]
            repair = None if base is None else (entity, base.last)
            for epoch in range(epochs + 1):  # a tombstone starts the run afresh
                if epochs:
                    events = [i for i in items if i[EPOCH] == epoch and i[EVENT] is not None]
                else:  # the common case: no tombstone among them
                    events = items
                if run_pass.late:  # else each run's items came in rising sequence order
                    events.sort(key=by_sequence)
                if epoch:
                    folded = fold(None, events, None, refuse)
                else:
                    folded = fold(original, events, repair, refuse)
                if epoch < epochs:  # folded, then deleted by the tombstone after them
                    run_pass.result.folded += len(folded[1])
            if epochs:
                batch.delete_run(entity)
            self._stage(entity, original, folded, epochs > 0, batch, run_pass)

    def _refuse(self, item: Item, reason: str, run_pass: _Pass) -> None:
        """Dead-letter an event the fold cannot take; its sequence counts as missing again,
        so the same event replayed after a fix is late, not a duplicate."""
        self._dead(run_pass.result, item[RECORD], f"projection {self.projection.name!r} {reason}")
        cursor = run_pass.cursors.get(item[RUN])
        if cursor is not None and cursor.last >= 0 and item[EPOCH] == cursor.epoch:
            cursor.move(RunHead(cursor.last, cursor.missing).reopen(item[SEQUENCE]))

    def _stage(
        self,
        entity: bytes,
        original: S | None,
        folded: Folded,
        deleted: bool,
        batch: StoreBatch,
        run_pass: _Pass,
    ) -> None:
        """Put the new state, its index changes and, for a run, its new events and the
        snapshots due; if the state cannot be encoded or indexed, refuse its events."""
        state, items, snapshots = folded
        projection = self.projection
        run_keyed = projection.run_keyed
        index_keys = projection.index_keys
        try:
            encoded = None if state is None else projection.encode_state(state)
            new = set() if state is None else set(index_keys(state))
        except Exception as error:  # the entity stays as it was (or deleted, if tombstoned)
            for item in items:
                reason = f"cannot store the state after this event: {type(error).__name__}: "
                self._refuse(item, reason + str(error), run_pass)
            items, snapshots, encoded = [], [], None
            new = set() if deleted or original is None else set(index_keys(original))
        result = run_pass.result
        result.folded += len(items)
        late = sum(item[LATE] for item in items) if run_pass.late else 0
        if late:
            result.late_repaired += late
            log.info(
                "%s %s: %d late event(s) folded in place",
                "run" if run_keyed else "entity",
                uuid.UUID(bytes=entity) if run_keyed else entity,
                late,
            )
        old = set() if original is None else set(index_keys(original))
        for key in old - new:
            batch.delete_index(key)
        for key in new - old:
            batch.put_index(key)
        if encoded is not None:
            batch.put_state(entity, encoded)
            result.states[entity] = state
        if run_keyed:
            if items:
                batch.put_events(entity, map(_sequence_and_value, items))
            for sequence, micros, snapshot in snapshots:
                batch.put_snapshot(entity, sequence, micros, snapshot)
