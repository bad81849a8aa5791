"""Read any projection's store: by key, many at once, at a point in time, by index.

`ProjectionReader` is the one code path of every read: it asks the store (never RocksDB
itself) and answers stored bytes. `ProjectionQuery` (behest.read.projection_query) and
`RunStateQuery` add the last step, bytes to what the caller wants (the projection's
state, a model, or the bytes as they are), so each read exists once and HTTP serves
stored bytes without re-encoding them.

Reads come from a RocksDB *secondary* instance: the projector keeps writing undisturbed
and this side catches up lazily. Before answering, if the last check is older than
`max_staleness` seconds and the writer wrote since, it catches up (milliseconds), so every
answer reflects every write made at least `max_staleness` seconds before (`freshness()`
says when exactly), and `wait_for` waits for one given write.

Point in time (run-keyed projections, which keep each run's events): `as_of` means "every
event with timestamp <= as_of", `at_sequence` "every event with sequence <= at_sequence".
Both start from the nearest stored snapshot at or before the point and fold the events
after it with the projection's own `apply`, so the cost is bounded by the projector's
snapshot interval. Folding by time stops at the first event later than `as_of`; that is
exact because a run's timestamps never decrease (the recorder stamps them so).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

from behest import codec
from behest.codec import decode_record
from behest.config import DEFAULT_TOPIC, Settings
from behest.errors import InvalidQueryError, WaitTimeoutError
from behest.fold.projection import Projection, combiner, index_entity
from behest.fold.sequences import RunHead
from behest.fold.storeset import StoreSet
from behest.times import format_time

__all__ = [
    "DEFAULT_MAX_STALENESS",
    "DEFAULT_WAIT_TIMEOUT",
    "Absent",
    "Freshness",
    "Position",
    "ProjectionReader",
    "StoreReader",
    "open_store",
]

DEFAULT_MAX_STALENESS: Final = 0.1
"""Seconds an answer may lag behind the projector's writes (see the module docstring)."""

DEFAULT_WAIT_TIMEOUT: Final = 10.0

_FOLLOW_MIN_INTERVAL: Final = 0.005
"""`keep_fresh` catches up at most this often, however small `max_staleness` is."""

log = logging.getLogger(__name__)

_WAIT_FIRST_SLEEP: Final = 0.002
_WAIT_MAX_SLEEP: Final = 0.05

S = TypeVar("S")
T = TypeVar("T")
U = TypeVar("U")


class StoreReader(Protocol):
    """The read API a reader needs of a projection's store: a `StateStore`, or anything that
    reads several of them as one (e.g. one store per partition). Nothing else is used, so
    no reader walks RocksDB iterators or reads RocksDB's files itself."""

    @property
    def path(self) -> Path: ...

    @property
    def secondary(self) -> bool: ...

    def get_state(self, key: bytes) -> bytes | None: ...

    def get_states(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def scan_states(
        self,
        prefix: bytes = b"",
        *,
        after: bytes | None = None,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def scan_index(
        self,
        prefix: bytes,
        after: bytes | None = None,
        *,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[bytes]: ...

    def get_heads(self, runs: Sequence[bytes]) -> list[RunHead | None]: ...

    def stored_offsets(self, topic: str) -> dict[int, int]: ...

    def get_schema(self, fingerprint: bytes) -> bytes | None: ...

    def iter_events(
        self, run: bytes, from_sequence: int = 0, to_sequence: int | None = None
    ) -> Iterator[tuple[int, bytes]]: ...

    def last_event(self, run: bytes) -> tuple[int, bytes] | None: ...

    def snapshot_at_or_before(self, run: bytes, sequence: int) -> tuple[int, bytes] | None: ...

    def snapshot_at_or_before_time(self, run: bytes, micros: int) -> tuple[int, bytes] | None: ...

    def catch_up_if_changed(self) -> bool: ...

    def close(self) -> None: ...


class Absent(enum.Enum):
    """Why a point-in-time read found no state: one read tells both apart."""

    UNKNOWN = "unknown"
    """No state under that key at all."""
    NOT_YET = "not yet"
    """The entity exists, but had no event by the point asked for."""


class Position(Protocol):
    """Where Kafka stored a record, e.g. the `Delivery` an `EventProducer` future yields."""

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


@dataclass(frozen=True)
class Freshness:
    """How current answers are: they reflect every write the projector made before
    `synced_at`, which is at most `max_staleness` seconds old when a query runs."""

    topic: str
    offsets: dict[int, int]
    """Next offset to fold per partition: everything before it is in the answers."""
    synced_at: datetime
    max_staleness: float

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "synced_at": format_time(self.synced_at),
            "max_staleness_s": self.max_staleness,
        }


def open_store(settings: Settings, projection: Projection[Any], *, secondary: bool) -> StoreSet:
    """The served generation of `projection` under `settings.state_dir`, its partition
    stores read as one (`behest.fold.storeset`), following switches and rebuilds."""
    return StoreSet.open(
        settings.state_dir, projection.name, secondary=secondary, combine=combiner(projection)
    )


class ProjectionReader(Generic[S]):
    """Every read of one projection's store, answered as stored bytes."""

    def __init__(
        self,
        store: StoreReader,
        projection: Projection[S],
        *,
        topic: str = DEFAULT_TOPIC,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self.projection = projection
        self.topic = topic
        self.max_staleness = max_staleness
        self._owns_store = owns_store
        self.settings: Settings | None = None
        """Where the topic is (opened from settings): the runs feed reads which runs changed
        from the topic itself."""
        self._sync_lock = threading.Lock()
        self._checked = -float("inf")
        self._synced_at = datetime.now(UTC)
        self._closers: list[Callable[[], None]] = []
        self._follower: threading.Thread | None = None
        custom = getattr(projection, "state_json", None)
        self.state_json: Callable[[bytes], bytes] | None = custom
        """How a stored state becomes JSON; None when it is stored as JSON already."""
        codec.add_schema_source(self)  # stored events written with a published schema

    def get_schema(self, fingerprint: bytes) -> bytes | None:
        """A published writer schema the projector kept beside the events that use it."""
        return self.store.get_schema(fingerprint)

    @classmethod
    def open(
        cls,
        settings: Settings,
        projection: Projection[S],
        *,
        secondary: bool = True,
        max_staleness: float = DEFAULT_MAX_STALENESS,
    ) -> ProjectionReader[S]:
        """Open the projection's store under `settings.state_dir`; as a secondary by
        default, so a running projector is neither blocked nor locked out."""
        store = open_store(settings, projection, secondary=secondary)
        reader = cls(
            store, projection, topic=settings.topic, max_staleness=max_staleness, owns_store=True
        )
        reader.settings = settings
        reader.refresh(force=True)
        return reader

    @property
    def name(self) -> str:
        return self.projection.name

    def close(self) -> None:
        """Stop what reads along with this reader (`on_close`), then release the store if
        this reader opened it."""
        closers, self._closers = self._closers, []
        for close in closers:
            close()
        if self._owns_store:
            self.store.close()

    def on_close(self, close: Callable[[], None]) -> None:
        """Have `close` run first when this reader closes (e.g. a background tailer)."""
        self._closers.append(close)

    def __enter__(self) -> ProjectionReader[S]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- freshness ----------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Catch up with the projector if the last check is older than `max_staleness`
        (always, with `force`) and it wrote since. A no-op on the writer's own store."""
        if not self.store.secondary:
            return
        now = time.monotonic()
        if not force and now - self._checked < self.max_staleness:
            return
        # Another thread syncing already serves this read; `force` waits for it.
        if not self._sync_lock.acquire(blocking=force):
            return
        try:
            checked_at = datetime.now(UTC)
            self.store.catch_up_if_changed()
            self._checked = now
            self._synced_at = checked_at
        finally:
            self._sync_lock.release()

    def keep_fresh(self) -> None:
        """Catch up on a thread of its own every 0.8 `max_staleness` seconds from now on
        (until `close`), so reads rarely find the view stale and catch up themselves: a
        server's event loop then seldom stalls on it (a look at the writers' files costs
        hundreds of microseconds, a catch-up milliseconds). Reads still catch up
        themselves if the thread falls behind, so the freshness bound holds either way. A
        no-op on the writer's own store, with `max_staleness` 0 (every read catches up),
        or when already keeping fresh."""
        if not self.store.secondary or self._follower is not None or self.max_staleness <= 0:
            return
        stop = threading.Event()
        self._follower = threading.Thread(
            target=_follow,
            args=(weakref.ref(self), stop, max(self.max_staleness * 0.8, _FOLLOW_MIN_INTERVAL)),
            name=f"behest-fresh-{self.name}",
            daemon=True,
        )
        self._follower.start()

        def stop_following() -> None:
            stop.set()
            if self._follower is not None:
                self._follower.join(5)
                self._follower = None

        self.on_close(stop_following)

    def freshness(self) -> Freshness:
        """The stored next offsets per partition and when this view last synced."""
        self.refresh()
        return Freshness(
            topic=self.topic,
            offsets=self.store.stored_offsets(self.topic),
            synced_at=self._synced_at if self.store.secondary else datetime.now(UTC),
            max_staleness=self.max_staleness,
        )

    def wait_for(
        self, position: Position | tuple[int, int], timeout: float = DEFAULT_WAIT_TIMEOUT
    ) -> None:
        """Return once the projection has folded `position` (a producer `Delivery` or
        `(partition, offset)`), so a read that follows sees that write."""
        if isinstance(position, tuple):
            partition, offset = position
            if not all(isinstance(v, int) for v in position):
                raise InvalidQueryError(f"a position is (partition, offset), not {position!r}")
        else:
            partition, offset = position.partition, position.offset
            topic = getattr(position, "topic", self.topic)
            if topic != self.topic:
                raise InvalidQueryError(
                    f"that write went to topic {topic!r}, but this query reads the projection "
                    f"of {self.topic!r}: open the query with that topic"
                )
        if partition < 0 or offset < 0:
            raise InvalidQueryError(f"no such position: partition {partition}, offset {offset}")
        deadline = time.monotonic() + timeout
        pause = _WAIT_FIRST_SLEEP
        while True:
            self.refresh(force=True)
            folded = self.store.stored_offsets(self.topic).get(partition, 0)
            if folded > offset:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(
                    f"the projection {self.name!r} of {self.topic!r} has folded partition "
                    f"{partition} up to offset {folded}, not yet past {offset}, after "
                    f"{timeout:g} s: is `behest project` running and keeping up?"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, _WAIT_MAX_SLEEP)

    # --- states -------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """The stored state under `key`, or None."""
        self.refresh()
        return self.store.get_state(key)

    def get_many(self, keys: Sequence[bytes], micros: int | None = None) -> list[bytes | None]:
        """Stored states of `keys` in one multi-get, in order (None when unknown); with
        `micros`, each state as of that time (None when it had no event by then)."""
        self.refresh()
        values = self.store.get_states(keys)
        if micros is None:
            return values
        found = []
        for key, current in zip(keys, values, strict=True):
            at = None if current is None else self._at(key, current, micros, None)
            found.append(at if isinstance(at, bytes) else None)
        return found

    def get_at(self, key: bytes, micros: int | None, sequence: int | None) -> bytes | Absent:
        """The state after every event with timestamp <= `micros` (or sequence <=
        `sequence`; neither: the current state), or why there is none."""
        self.refresh()
        current = self.store.get_state(key)
        if current is None:
            return Absent.UNKNOWN
        return self._at(key, current, micros, sequence)

    def _at(
        self, key: bytes, current: bytes, micros: int | None, sequence: int | None
    ) -> bytes | Absent:
        """Snapshot at or before the point, then fold the stored events after it."""
        if micros is None and sequence is None:
            return current
        projection, store = self.projection, self.store
        if not projection.run_keyed:
            raise InvalidQueryError(
                f"projection {projection.name!r} is not keyed by run, so it keeps no events "
                "to go back in time with: ask for its current state"
            )
        last = store.last_event(key)
        if last is None:
            return current
        if sequence is not None:
            if sequence >= last[0]:
                return current
            snapshot = store.snapshot_at_or_before(key, sequence)
            if snapshot is not None and snapshot[0] == sequence:
                return snapshot[1]
        elif micros is not None:
            if decode_record(last[1])["timestamp"] <= micros:
                return current
            snapshot = store.snapshot_at_or_before_time(key, micros)
        else:
            return current
        state = None if snapshot is None else projection.decode_state(snapshot[1])
        folded = False
        apply = projection.apply
        start = 0 if snapshot is None else snapshot[0] + 1
        for _, data in store.iter_events(key, start, sequence):
            event = decode_record(data)
            if micros is not None and event["timestamp"] > micros:
                break
            state = apply(state, event)
            folded = True
        if not folded or state is None:
            return Absent.NOT_YET if snapshot is None else snapshot[1]
        return projection.encode_state(state)

    # --- scans --------------------------------------------------------------------------------

    def scan(
        self,
        prefix: bytes = b"",
        *,
        after: bytes | None = None,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """`(key, state)` of the keys under `prefix`, strictly between `after` and `before`,
        in key order (descending with `reverse`)."""
        self.refresh()
        return self.store.scan_states(prefix, after=after, before=before, reverse=reverse)

    def index(
        self,
        prefix: bytes,
        *,
        after: bytes | None = None,
        before: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[bytes]:
        """Index keys under `prefix`, strictly between `after` and `before`, in order."""
        self.refresh()
        return self.store.scan_index(prefix, after=after, before=before, reverse=reverse)

    def listed(
        self,
        index_keys: Iterable[bytes],
        limit: int,
        keep: Callable[[bytes], bool] | None = None,
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """Up to `limit` `(index key, state)` of the states `index_keys` list, in their
        order, skipping entries whose state is gone (or that `keep` refuses); and the last
        index key returned when there may be more (a cursor's position), else None."""
        found: list[tuple[bytes, bytes]] = []
        entity = index_entity(self.projection)
        for chunk in _chunks(iter(index_keys), limit + 1):
            values = self.store.get_states([entity(k) for k in chunk])
            for index_key, value in zip(chunk, values, strict=True):
                # None: deleted since the index was read
                if value is not None and (keep is None or keep(value)):
                    found.append((index_key, value))
            if len(found) > limit:
                return found[:limit], found[limit - 1][0]
        return found, None

    def events(self, key: bytes, from_sequence: int, limit: int) -> list[bytes]:
        """Up to `limit` stored events of a run from `from_sequence` on, in sequence order."""
        self.refresh()
        found = []
        for _, data in self.store.iter_events(key, from_sequence):
            found.append(data)
            if len(found) == limit:
                break
        return found


def _follow(
    reader: weakref.ref[ProjectionReader[Any]], stop: threading.Event, every: float
) -> None:
    """`keep_fresh`'s thread: until `stop`, or until the reader is gone."""
    while not stop.wait(every):
        current = reader()
        if current is None:
            return
        try:
            current.refresh(force=True)
        except Exception:  # closed or failing store: the reads say so; try again next turn
            log.debug("catching up %s failed", current.name, exc_info=True)
        del current


def _chunks(items: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
