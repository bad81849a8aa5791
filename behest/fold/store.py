"""The RocksDB state store (rocksdict): key layouts, atomic batches, and reads.

One RocksDB per (projection, generation, partition) — where each lives is
`behest.fold.layout`, how a generation's are read as one is `behest.fold.storeset` —
with one column family per kind of record:

| family    | key                                   | value                                  |
|-----------|---------------------------------------|----------------------------------------|
| states    | entity key (a run id: 16 bytes)       | the projection's encoded state         |
| events    | run id ‖ sequence (8 bytes, BE)       | the event's bytes as stored on the log |
| snapshots | run id ‖ sequence                     | encoded state after folding `sequence` |
| snaptimes | run id ‖ time (µs + 2^63, 8 bytes BE) | sequence of the snapshot at that time  |
| index     | projection-defined (`s`‖session‖…)    | empty                                  |
| heads     | run id                                | highest sequence ‖ gaps (`RunHead`)    |
| offsets   | topic ‖ 0x00 ‖ partition (4 bytes BE) | next offset to read (8 bytes, BE)      |
| schemas   | writer schema fingerprint (8 bytes)   | JSON of a published schema events use  |

Big-endian integers make RocksDB's byte order the numeric order, so a prefix
scan yields a run's events in sequence order. Everything a batch of Kafka
records changes in a partition, its offset included, is written in ONE `WriteBatch`:
state and position can never disagree, which is what makes the fold exactly-once.
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from rocksdict import AccessType, Options, Rdict, WriteBatch

from behest.errors import StateLockedError, StoreError
from behest.fold.sequences import RunHead, decode_head, encode_head

STATES: Final = "states"
EVENTS: Final = "events"
SNAPSHOTS: Final = "snapshots"
SNAPTIMES: Final = "snaptimes"
INDEX: Final = "index"
HEADS: Final = "heads"
OFFSETS: Final = "offsets"
SCHEMAS: Final = "schemas"
FAMILIES: Final = (STATES, EVENTS, SNAPSHOTS, SNAPTIMES, INDEX, HEADS, OFFSETS, SCHEMAS)

RUN_KEY_SIZE: Final = 16
MAX_SEQUENCE: Final = 2**63 - 1
"""Largest sequence a run can have (an Avro long)."""
_U64 = struct.Struct(">Q")
_RUN_SEQUENCE = struct.Struct(">16sQ")
"""`run ‖ sequence` in one call (`sequence_key` for a run key of its 16 bytes)."""
_PARTITION = struct.Struct(">I")
_TIME_BIAS = 1 << 63


# --- key layouts: one function to build and one to parse each ---------------------------------


def run_key(run_id: uuid.UUID | str) -> bytes:
    """The 16 bytes of a run id, the prefix of all of that run's records."""
    return (run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(run_id)).bytes


def parse_run_key(key: bytes) -> uuid.UUID:
    """The run id a 16-byte run key (or the prefix of a longer key) stands for."""
    return uuid.UUID(bytes=key[:RUN_KEY_SIZE])


def sequence_key(run: bytes, sequence: int) -> bytes:
    """`run ‖ sequence`: the key of an event or a snapshot."""
    return run + _U64.pack(sequence)


def parse_sequence_key(key: bytes) -> tuple[bytes, int]:
    """`(run, sequence)` of an event or snapshot key."""
    return key[:RUN_KEY_SIZE], _U64.unpack_from(key, RUN_KEY_SIZE)[0]


def time_key(run: bytes, micros: int) -> bytes:
    """`run ‖ timestamp`: the key of a snapshot's entry in the time index. The time is
    biased by 2**63, so byte order is time order for pre-1970 (negative) times too."""
    return run + _U64.pack(micros + _TIME_BIAS)


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_u64(data: bytes) -> int:
    value: int = _U64.unpack(data)[0]
    return value


def offset_key(topic: str, partition: int) -> bytes:
    """`topic ‖ 0x00 ‖ partition`: where a partition's next offset is kept."""
    return topic.encode() + b"\x00" + _PARTITION.pack(partition)


def parse_offset_key(key: bytes) -> tuple[str, int]:
    """`(topic, partition)` of an offset key; the partition is the fixed-size tail (its
    bytes may well contain 0x00, topic names never do)."""
    size = _PARTITION.size
    return key[: -size - 1].decode(), int(_PARTITION.unpack(key[-size:])[0])


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError("a prefix of only 0xff bytes has no upper bound")
    return stripped[:-1] + bytes([stripped[-1] + 1])


# --- the store --------------------------------------------------------------------------------


def _options(*, secondary: bool = False) -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.set_max_background_jobs(2)
    if secondary:
        # RocksDB's default (16) makes every try_catch_up_with_primary start and join 15
        # threads (to load new tables' handlers, even when there are none): ~10 ms a
        # catch-up on a busy machine, all of it holding the GIL. 1 loads them inline.
        options.set_max_file_opening_threads(1)
    return options


class StateStore:
    """A projection's RocksDB: the projector writes it, queries read it.

    Open it once per process for writing; another process (a query server) opens it
    with `secondary=True` and calls `catch_up()` to see the writer's progress without
    blocking it.
    """

    def __init__(self, path: Path | str, *, secondary: bool = False) -> None:
        self.path = Path(path)
        self.secondary = secondary
        self._secondary_path: Path | None = None
        families = {name: Options(raw_mode=True) for name in FAMILIES}
        try:
            if secondary:
                if not (self.path / "CURRENT").exists():
                    raise StoreError(
                        f"no projection state at {self.path}: run `behest project` first "
                        "(or point BEHEST_STATE_DIR at the projector's state directory)"
                    )
                secondary_path = self.path.parent / f".{self.path.name}.secondary-{uuid.uuid4()}"
                self._secondary_path = secondary_path
                self._db = Rdict(
                    str(self.path),
                    _options(secondary=True),
                    column_families=families,
                    access_type=AccessType.secondary(str(secondary_path)),
                )
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._db = Rdict(str(self.path), _options(), column_families=families)
        except StoreError:
            raise
        except Exception as error:  # rocksdict raises plain Exception
            message = str(error)
            if "lock" in message.lower():
                raise StateLockedError(
                    f"the state directory {self.path} is in use by another projector; stop "
                    "it, or give this one its own BEHEST_STATE_DIR"
                ) from None
            raise StoreError(f"cannot open the state directory {self.path}: {message}") from None
        self.states = self._db.get_column_family(STATES)
        self.events = self._db.get_column_family(EVENTS)
        self.snapshots = self._db.get_column_family(SNAPSHOTS)
        self.snaptimes = self._db.get_column_family(SNAPTIMES)
        self.index = self._db.get_column_family(INDEX)
        self.heads = self._db.get_column_family(HEADS)
        self.offsets = self._db.get_column_family(OFFSETS)
        self.schemas = self._db.get_column_family(SCHEMAS)
        self._handles = {name: self._db.get_column_family_handle(name) for name in FAMILIES}
        self._closed = False
        self._signature: tuple[tuple[str, int, int], ...] | None = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and release the RocksDB (and its lock); idempotent.

        rocksdict keeps the database, lock included, alive while any column family
        object or handle of it lives, so those go first; the families are unusable after.
        """
        if self._closed:
            return
        self._closed = True
        self._handles.clear()
        for name in FAMILIES:
            delattr(self, name)
        self._db.close()
        if self._secondary_path is not None:  # a secondary's own info log and options
            shutil.rmtree(self._secondary_path, ignore_errors=True)

    def iter_family(self, family: str) -> Iterator[tuple[bytes, bytes]]:
        """Every `(key, value)` of one column family (of `FAMILIES`) in key order: for
        copying a store (a standby copy seeding a partition's store)."""
        return _range(getattr(self, family), b"", None, None, False)

    # --- writes -------------------------------------------------------------------------------

    def batch(self) -> StoreBatch:
        """A new atomic batch; nothing is visible until `write(batch)`."""
        return StoreBatch(self._handles)

    def write(self, batch: StoreBatch) -> None:
        """Apply every change of `batch` atomically."""
        if batch.is_empty():
            return
        try:
            self._db.write(batch.raw)
        except Exception as error:  # rocksdict raises plain Exception (disk full, I/O error)
            raise StoreError(f"cannot write to the state directory {self.path}: {error}") from None

    # --- reads: the API every reader goes through (no reader walks RocksDB itself) -------

    def get_state(self, key: bytes) -> bytes | None:
        """The stored state of one entity, or None."""
        value: bytes | None = self.states.get(key)
        return value

    def get_states(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Multi-get: one RocksDB call for many keys, values in the order of `keys`."""
        if not keys:
            return []
        values: list[bytes | None] = self.states.get(list(keys)) or []
        return values

    def iter_states(self) -> Iterator[tuple[bytes, bytes]]:
        """Every `(key, encoded state)`, in key order (for tests, exports and audits)."""
        return self.scan_states()

    def scan_states(
        self,
        prefix: bytes = b"",
        *,
        after: bytes | None = None,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """`(key, state)` of the keys that start with `prefix`, strictly between `after`
        and `before` (either may be None), ascending, or descending with `reverse`."""
        return _range(self.states, prefix, after, before, reverse)

    def scan_index(
        self,
        prefix: bytes,
        after: bytes | None = None,
        *,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[bytes]:
        """Index keys that start with `prefix`, strictly between `after` and `before`,
        ascending, or descending with `reverse`."""
        for key, _ in _range(self.index, prefix, after, before, reverse):
            yield key

    def get_head(self, run: bytes) -> RunHead | None:
        """A run's highest sequence seen and its gaps, or None if it has no events."""
        value = self.heads.get(run)
        return None if value is None else decode_head(value)

    def get_heads(self, runs: Sequence[bytes]) -> list[RunHead | None]:
        """Multi-get of heads, in the order of `runs`."""
        if not runs:
            return []
        values: list[bytes | None] = self.heads.get(list(runs)) or []
        return [None if v is None else decode_head(v) for v in values]

    def get_events(self, keys: Sequence[tuple[bytes, int]]) -> list[bytes | None]:
        """Multi-get of stored events by `(run, sequence)`, in the order of `keys`."""
        if not keys:
            return []
        values: list[bytes | None] = self.events.get([sequence_key(r, s) for r, s in keys]) or []
        return values

    def stored_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to read for each partition of `topic` this store has folded."""
        prefix = topic.encode() + b"\x00"
        return {
            parse_offset_key(key)[1]: decode_u64(value)
            for key, value in _range(self.offsets, prefix, None, None, False)
        }

    def get_schema(self, fingerprint: bytes) -> bytes | None:
        """The JSON of a writer schema this store's events were folded with, if kept (None
        once closed: a reader still registered as the codec's schema source may outlive it)."""
        if self._closed:
            return None
        value: bytes | None = self.schemas.get(fingerprint)
        return value

    def iter_schemas(self) -> Iterator[tuple[bytes, bytes]]:
        """Every kept `(fingerprint, schema JSON)`."""
        return _range(self.schemas, b"", None, None, False)

    def iter_events(
        self, run: bytes, from_sequence: int = 0, to_sequence: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """`(sequence, event bytes)` of one run in sequence order, within the bounds."""
        iterator = self.events.iter()
        iterator.seek(sequence_key(run, from_sequence))
        # Every key of the family is `run ‖ sequence` (24 bytes), so one comparison with
        # the last key wanted also stops at the next run's first key.
        end = sequence_key(run, MAX_SEQUENCE if to_sequence is None else to_sequence)
        while iterator.valid():
            key = iterator.key()
            if key > end:
                return
            yield _U64.unpack_from(key, RUN_KEY_SIZE)[0], iterator.value()
            iterator.next()

    def last_event(self, run: bytes) -> tuple[int, bytes] | None:
        """`(sequence, event bytes)` of a run's last stored event, or None."""
        found = _seek_for_prev(self.events, run, sequence_key(run, MAX_SEQUENCE))
        return None if found is None else (parse_sequence_key(found[0])[1], found[1])

    def snapshot_at_or_before(self, run: bytes, sequence: int) -> tuple[int, bytes] | None:
        """`(sequence, state)` of the latest snapshot of `run` taken at or before `sequence`."""
        found = _seek_for_prev(self.snapshots, run, sequence_key(run, sequence))
        if found is None:
            return None
        return parse_sequence_key(found[0])[1], found[1]

    def snapshot_sequence_at_or_before_time(self, run: bytes, micros: int) -> int | None:
        """Sequence of the latest snapshot of `run` whose last event is at or before `micros`."""
        found = _seek_for_prev(self.snaptimes, run, time_key(run, micros))
        return None if found is None else decode_u64(found[1])

    def snapshot_at_or_before_time(self, run: bytes, micros: int) -> tuple[int, bytes] | None:
        """`(sequence, state)` of the latest snapshot of `run` whose last event is at or
        before `micros` (UTC microseconds)."""
        sequence = self.snapshot_sequence_at_or_before_time(run, micros)
        return None if sequence is None else self.snapshot_at_or_before(run, sequence)

    # --- following the writer (secondary instances) -------------------------------------------

    def catch_up(self) -> None:
        """Secondary instances only: see everything the writer has written so far."""
        if self.secondary:
            self._db.try_catch_up_with_primary()
            self._signature = self._writer_signature()

    def catch_up_if_changed(self) -> bool:
        """`catch_up`, only if the writer wrote since the last one (a look at its file names,
        sizes and times costs microseconds; a catch-up, milliseconds). True if it caught up."""
        if not self.secondary:
            return False
        signature = self._writer_signature()
        if signature == self._signature:
            return False
        self._db.try_catch_up_with_primary()
        self._signature = signature
        return True

    def _writer_signature(self) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and times of the writer's log and manifest files: they change
        whenever it writes, so an unchanged signature means nothing new to catch up with."""
        entries = []
        try:
            with os.scandir(self.path) as found:
                for entry in found:
                    name = entry.name
                    if name.endswith(".log") or name.startswith("MANIFEST-") or name == "CURRENT":
                        stat = entry.stat()
                        entries.append((name, stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            raise StoreError(
                f"the projection state at {self.path} is gone: restart with the projector's "
                "state dir"
            ) from None
        return tuple(sorted(entries))


def _range(
    family: Rdict, prefix: bytes, after: bytes | None, before: bytes | None, reverse: bool
) -> Iterator[tuple[bytes, bytes]]:
    """`(key, value)` of `family` under `prefix`, strictly between `after` and `before`."""
    iterator = family.iter()
    if not reverse:
        start = prefix if after is None else max(prefix, after + b"\x00")
        iterator.seek(start)
        while iterator.valid():
            key: bytes = iterator.key()
            if not key.startswith(prefix) or (before is not None and key >= before):
                return
            yield key, iterator.value()
            iterator.next()
        return
    bound = _upper_bound(prefix)
    if before is not None and (bound is None or before < bound):
        bound = before
    if bound is None:
        iterator.seek_to_last()
    else:
        iterator.seek_for_prev(bound)
        if iterator.valid() and iterator.key() >= bound:
            iterator.prev()
    while iterator.valid():
        key = iterator.key()
        if not key.startswith(prefix) or (after is not None and key <= after):
            return
        yield key, iterator.value()
        iterator.prev()


def _upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key after every key under `prefix`; None when there is none."""
    return None if not prefix.rstrip(b"\xff") else prefix_end(prefix)


def _seek_for_prev(family: Rdict, prefix: bytes, key: bytes) -> tuple[bytes, bytes] | None:
    iterator = family.iter()
    iterator.seek_for_prev(key)
    if iterator.valid() and iterator.key().startswith(prefix):
        return iterator.key(), iterator.value()
    return None


class StoreBatch:
    """Changes to apply in one atomic RocksDB write."""

    def __init__(self, handles: dict[str, Any]) -> None:
        self.raw = WriteBatch(raw_mode=True)
        self.raw.set_default_column_family(handles[EVENTS])  # one per event: no family to pass
        self._h = handles

    def is_empty(self) -> bool:
        empty: bool = self.raw.is_empty()
        return empty

    def put_state(self, key: bytes, state: bytes) -> None:
        self.raw.put(key, state, self._h[STATES])

    def delete_state(self, key: bytes) -> None:
        self.raw.delete(key, self._h[STATES])

    def put_event(self, run: bytes, sequence: int, data: bytes) -> None:
        self.raw.put(sequence_key(run, sequence), data, self._h[EVENTS])

    def put_events(self, run: bytes, events: Iterable[tuple[int, bytes]]) -> None:
        """`put_event` for many `(sequence, bytes)` of one run: the projector's hot path (a
        key in one `pack`, the batch's default family: ~20% fewer instructions a put)."""
        if len(run) != RUN_KEY_SIZE:  # `16s` would pad or cut it silently
            raise ValueError(f"a run key is {RUN_KEY_SIZE} bytes, got {len(run)}")
        put, pack = self.raw.put, _RUN_SEQUENCE.pack
        for sequence, data in events:
            put(pack(run, sequence), data)

    def put_snapshot(self, run: bytes, sequence: int, micros: int, state: bytes) -> None:
        self.raw.put(sequence_key(run, sequence), state, self._h[SNAPSHOTS])
        self.raw.put(time_key(run, micros), encode_u64(sequence), self._h[SNAPTIMES])

    def put_head(self, run: bytes, head: RunHead) -> None:
        self.raw.put(run, encode_head(head), self._h[HEADS])

    def delete_head(self, run: bytes) -> None:
        self.raw.delete(run, self._h[HEADS])

    def put_index(self, key: bytes) -> None:
        self.raw.put(key, b"", self._h[INDEX])

    def delete_index(self, key: bytes) -> None:
        self.raw.delete(key, self._h[INDEX])

    def put_schema(self, fingerprint: bytes, schema: bytes) -> None:
        self.raw.put(fingerprint, schema, self._h[SCHEMAS])

    def put_raw(self, family: str, key: bytes, value: bytes) -> None:
        """An entry of any family as it is (copying a store)."""
        self.raw.put(key, value, self._h[family])

    def put_offset(self, topic: str, partition: int, next_offset: int) -> None:
        self.raw.put(offset_key(topic, partition), encode_u64(next_offset), self._h[OFFSETS])

    def delete_run(self, run: bytes) -> None:
        """Every record of a run except index entries (which the caller derives from state)."""
        end = prefix_end(run)
        self.raw.delete(run, self._h[STATES])
        self.raw.delete(run, self._h[HEADS])
        for family in (EVENTS, SNAPSHOTS, SNAPTIMES):
            self.raw.delete_range(run, end, self._h[family])
