"""Read run states: current, at a point in time, in batches, by index, and after a write.

    with RunStateQuery.open(Settings()) as query:
        query.get(run_id)                                   # current state or None
        query.get_at(run_id, as_of=datetime(..., tzinfo=UTC))  # state back then
        query.get_many(run_ids)                             # one RocksDB multi-get
        runs, cursor = query.list_runs(status="failed")    # newest first, paginated
        query.wait_for(producer.emit(event).result())      # read your own write

Reads come from the run-state projection's RocksDB, opened as a *secondary* instance: the
projector keeps writing undisturbed, and this side catches up with it. A catch-up costs
milliseconds (RocksDB replays the writer's log per column family), so it is done lazily:
before answering, if the last check is older than `max_staleness` seconds and the writer's
files changed since, catch up. Every answer therefore reflects every write the projector
made at least `max_staleness` seconds before it (`freshness()` says exactly when), and
`wait_for` waits for one specific write.

Point in time: `as_of` means "every event with timestamp <= as_of" and `at_sequence`
"every event with sequence <= at_sequence". Both start from the nearest stored snapshot at
or before the point and fold the events after it, so the cost is bounded by the
projector's snapshot interval. Folding by time stops at the first event later than
`as_of`; that is exact because a run's timestamps never decrease (the recorder stamps
them so).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

from behest.codec import decode, decode_record
from behest.config import DEFAULT_TOPIC, Settings
from behest.errors import InvalidQueryError, WaitTimeoutError
from behest.events import (
    AgentEvent,
    RunId,
    RunState,
    RunStatus,
    format_time,
    parse_run_id,
)
from behest.fold.store import StateStore, run_key
from behest.fold.storeset import StoreSet
from behest.projections.run_state import (
    INDEX_ACTIVE,
    INDEX_ALL,
    INDEX_SESSION,
    INDEX_STATUS,
    STATUS_CODES,
    TERMINAL,
    RunStateProjection,
    parse_micros,
)

__all__ = [
    "DEFAULT_EVENTS_LIMIT",
    "DEFAULT_MAX_STALENESS",
    "DEFAULT_RUNS_LIMIT",
    "DEFAULT_WAIT_TIMEOUT",
    "MAX_BATCH",
    "MAX_LIMIT",
    "MAX_SEQUENCE",
    "Freshness",
    "Position",
    "RunStateQuery",
    "parse_time",
]

MAX_BATCH: Final = 1000
"""Most run ids one `get_many` (or `POST /runs/batch`) may ask for."""

MAX_LIMIT: Final = 1000
"""Largest page `list_runs` and `list_events` return."""

DEFAULT_RUNS_LIMIT: Final = 50
DEFAULT_EVENTS_LIMIT: Final = 100

MAX_SEQUENCE: Final = 2**63 - 1
"""Largest sequence a run can have (an Avro long)."""

DEFAULT_MAX_STALENESS: Final = 0.1
"""Seconds an answer may lag behind the projector's writes (see the module docstring)."""

DEFAULT_WAIT_TIMEOUT: Final = 10.0

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_VERSION: Final = b"\x01"
_SUFFIX_SIZE: Final = 8 + 16  # created_at (µs, big-endian) ‖ run id: the tail of every index key
_WAIT_FIRST_SLEEP: Final = 0.002
_WAIT_MAX_SLEEP: Final = 0.05
_STATE: Final = RunState.__pydantic_validator__
"""`RunState.model_validate_json` minus its wrapper, which costs about a tenth of the call; one
pydantic-core call per state measured faster than one over a JSON array of them."""


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


# --- input checks: each says what was wrong and what is accepted ------------------------------


def _run_id(value: str | uuid.UUID) -> RunId:
    if isinstance(value, uuid.UUID):
        return RunId(value)
    if not isinstance(value, str):
        raise InvalidQueryError(f"a run id must be a UUID or its text, not {type(value).__name__}")
    return parse_run_id(value)


def _session_id(value: str | uuid.UUID) -> uuid.UUID:
    try:
        return _run_id(value)
    except InvalidQueryError:
        raise InvalidQueryError(
            f"session_id {value!r} is not a UUID: expected e.g. "
            "'3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00'"
        ) from None


def _sequence(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQueryError(f"{name} must be an integer, not {value!r}")
    if not 0 <= value <= MAX_SEQUENCE:
        raise InvalidQueryError(f"{name} must be between 0 and {MAX_SEQUENCE}, got {value}")
    return value


def _limit(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidQueryError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {value!r}")
    return value


def _status(value: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise InvalidQueryError(f"unknown status {value!r}: expected one of {known}") from None


def _micros(as_of: datetime) -> int:
    if not isinstance(as_of, datetime):
        raise InvalidQueryError(f"as_of must be a datetime, not {type(as_of).__name__}")
    offset = as_of.utcoffset()
    if offset is None:
        raise InvalidQueryError(
            f"as_of {as_of.isoformat()} has no time zone: pass an aware datetime "
            "(e.g. tzinfo=UTC) or a time like 2026-11-20T14:03:07Z"
        )
    delta = as_of - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with a zone (`2026-11-20T14:03:07.5Z`, `…+02:00`) as an aware
    datetime; raises `InvalidQueryError` for anything else."""
    if not isinstance(text, str) or not text:
        raise InvalidQueryError("a time is required, e.g. 2026-11-20T14:03:07Z")
    moment: datetime | None = None
    # In a URL query '+' decodes to a space, so '…T14:03:07 02:00' means '+02:00'.
    for candidate in (text, text.replace(" ", "+")):
        try:
            moment = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    if moment is None:
        raise InvalidQueryError(
            f"{text!r} is not an RFC 3339 time: expected e.g. 2026-11-20T14:03:07.123456Z"
        )
    if moment.utcoffset() is None:
        raise InvalidQueryError(
            f"{text!r} has no time zone: add 'Z' for UTC or an offset such as +02:00"
        )
    return moment


def _point(as_of: datetime | None, at_sequence: int | None) -> tuple[int | None, int | None]:
    if as_of is not None and at_sequence is not None:
        raise InvalidQueryError("give as_of or at_sequence, not both")
    micros = None if as_of is None else _micros(as_of)
    sequence = None if at_sequence is None else _sequence(at_sequence, "at_sequence")
    return micros, sequence


def _encode_cursor(suffix: bytes) -> str:
    return base64.urlsafe_b64encode(_CURSOR_VERSION + suffix).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError, TypeError):
        raw = b""
    if len(raw) != 1 + _SUFFIX_SIZE or raw[:1] != _CURSOR_VERSION:
        raise InvalidQueryError(
            f"cursor {cursor!r} is not one this API issued: pass back next_cursor exactly, "
            "or omit it to start from the newest run"
        )
    return raw[1:]


# --- the query --------------------------------------------------------------------------------


class RunStateQuery:
    """Current, point-in-time, batch and indexed reads of the run-state projection."""

    def __init__(
        self,
        store: StateStore | StoreSet,
        projection: RunStateProjection | None = None,
        *,
        topic: str = DEFAULT_TOPIC,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self.projection = projection or RunStateProjection()
        self.topic = topic
        self.max_staleness = max_staleness
        self._owns_store = owns_store
        self._sync_lock = threading.Lock()
        self._checked = -float("inf")
        self._synced_at = datetime.now(UTC)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        secondary: bool = True,
        max_staleness: float = DEFAULT_MAX_STALENESS,
    ) -> RunStateQuery:
        """Open the projection's store under `settings.state_dir`; as a secondary by
        default, so a running projector is neither blocked nor locked out."""
        projection = RunStateProjection()
        store = StoreSet.open(settings.state_dir, projection.name, secondary=secondary)
        query = cls(
            store,
            projection,
            topic=settings.topic,
            max_staleness=max_staleness,
            owns_store=True,
        )
        query.refresh(force=True)
        return query

    def close(self) -> None:
        """Release the store if this query opened it."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> RunStateQuery:
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
            self.store.catch_up()  # only what changed; a StoreSet also follows a switch
            self._checked = now
            self._synced_at = checked_at
        finally:
            self._sync_lock.release()

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
                    f"the projection of {self.topic!r} has folded partition {partition} up to "
                    f"offset {folded}, not yet past {offset}, after {timeout:g} s: is "
                    "`behest project` running and keeping up?"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, _WAIT_MAX_SLEEP)

    # --- current states -----------------------------------------------------------------------

    def get_json(self, run_id: str | uuid.UUID) -> bytes | None:
        """The current state as the contract's JSON, exactly as stored (no re-encoding)."""
        run = run_key(_run_id(run_id))
        self.refresh()
        return self.store.get_state(run)

    def get(self, run_id: str | uuid.UUID) -> RunState | None:
        """The current state of a run, or None if it is unknown."""
        data = self.get_json(run_id)
        return None if data is None else _state(data)

    def get_many_json(
        self, run_ids: Iterable[str | uuid.UUID], *, as_of: datetime | None = None
    ) -> dict[RunId, bytes | None]:
        """Stored JSON per run id (None when unknown), in the order asked, duplicates once;
        with `as_of`, each run's state at that time."""
        ids = list(dict.fromkeys(map(_run_id, _bounded(run_ids))))
        micros = None if as_of is None else _micros(as_of)
        self.refresh()
        values = self.store.get_states([r.bytes for r in ids])
        if micros is not None:
            values = [
                None if v is None else self._at(run_key(r), v, micros=micros, sequence=None)
                for r, v in zip(ids, values, strict=True)
            ]
        return dict(zip(ids, values, strict=True))

    def get_many(
        self, run_ids: Iterable[str | uuid.UUID], *, as_of: datetime | None = None
    ) -> dict[RunId, RunState | None]:
        """States of up to `MAX_BATCH` runs in one multi-get, keyed by run id in the order
        asked (None for unknown runs)."""
        return {
            run: None if data is None else _state(data)
            for run, data in self.get_many_json(run_ids, as_of=as_of).items()
        }

    # --- point in time ------------------------------------------------------------------------

    def get_at_json(
        self,
        run_id: str | uuid.UUID,
        *,
        as_of: datetime | None = None,
        at_sequence: int | None = None,
    ) -> bytes | None:
        """`get_at` as the contract's JSON."""
        run = run_key(_run_id(run_id))
        micros, sequence = _point(as_of, at_sequence)
        self.refresh()
        current = self.store.get_state(run)
        if current is None:
            return None
        return self._at(run, current, micros=micros, sequence=sequence)

    def get_at(
        self,
        run_id: str | uuid.UUID,
        *,
        as_of: datetime | None = None,
        at_sequence: int | None = None,
    ) -> RunState | None:
        """The state after every event with timestamp <= `as_of` (or sequence <=
        `at_sequence`); None if the run had no event by then. Neither: the current state."""
        data = self.get_at_json(run_id, as_of=as_of, at_sequence=at_sequence)
        return None if data is None else _state(data)

    def _at(
        self, run: bytes, current: bytes, *, micros: int | None, sequence: int | None
    ) -> bytes | None:
        """Snapshot at or before the point, then fold the stored events after it."""
        head = orjson.loads(current)
        if sequence is not None:
            if sequence >= head["sequence"]:
                return current
            snapshot = self.store.snapshot_at_or_before(run, sequence)
            if snapshot is not None and snapshot[0] == sequence:
                return snapshot[1]
        elif micros is not None:
            if micros >= parse_micros(head["updated_at"]):
                return current
            at = (
                self.store.snapshot_sequence_at_or_before_time(run, micros) if micros >= 0 else None
            )
            snapshot = None if at is None else self.store.snapshot_at_or_before(run, at)
        else:
            return current
        projection = self.projection
        state = None if snapshot is None else projection.decode_state(snapshot[1])
        folded = False
        # The events after the snapshot, up to the point.
        apply = projection.apply
        for _, data in self.store.iter_events(
            run, 0 if snapshot is None else snapshot[0] + 1, sequence
        ):
            event = decode_record(data)
            if micros is not None and event["timestamp"] > micros:
                break
            state = apply(state, event)
            folded = True
        if not folded or state is None:
            return None if snapshot is None else snapshot[1]
        return projection.encode_state(state)

    # --- listing ------------------------------------------------------------------------------

    def list_runs_json(
        self,
        *,
        session_id: str | uuid.UUID | None = None,
        status: RunStatus | str | None = None,
        active: bool | None = None,
        limit: int = DEFAULT_RUNS_LIMIT,
        cursor: str | None = None,
    ) -> tuple[list[bytes], str | None]:
        """`list_runs` as stored JSON states."""
        session = None if session_id is None else _session_id(session_id)
        wanted = None if status is None else _status(status)
        limit = _limit(limit)
        before = None if cursor is None else _decode_cursor(cursor)
        if active is not None and not isinstance(active, bool):
            raise InvalidQueryError(f"active must be true or false, not {active!r}")
        if wanted is not None and active is not None and wanted.is_terminal == active:
            return [], None  # e.g. status=completed with active=true: nothing can match
        if session is not None:
            prefixes = [INDEX_SESSION + session.bytes]
        elif wanted is not None:
            prefixes = [INDEX_STATUS + STATUS_CODES[wanted.value]]
        elif active:
            prefixes = [INDEX_ACTIVE]
        elif active is False:
            prefixes = [INDEX_STATUS + STATUS_CODES[s] for s in sorted(TERMINAL)]
        else:
            prefixes = [INDEX_ALL]
        # Only a session scan lists runs of any status; other filters the index answers.
        check_status = session is not None and (wanted is not None or active is not None)
        self.refresh()
        found: list[tuple[bytes, bytes]] = []
        for chunk in _chunks(self._newest_first(prefixes, before), limit + 1):
            values = self.store.get_states([run for _, run in chunk])
            for (suffix, _), value in zip(chunk, values, strict=True):
                if value is None:
                    continue  # deleted since the index was read
                if check_status:
                    run_status = RunStatus(orjson.loads(value)["status"])
                    if (wanted is not None and run_status != wanted) or (
                        active is not None and run_status.is_terminal == active
                    ):
                        continue
                found.append((suffix, value))
            if len(found) > limit:
                return [v for _, v in found[:limit]], _encode_cursor(found[limit - 1][0])
        return [v for _, v in found], None

    def list_runs(
        self,
        *,
        session_id: str | uuid.UUID | None = None,
        status: RunStatus | str | None = None,
        active: bool | None = None,
        limit: int = DEFAULT_RUNS_LIMIT,
        cursor: str | None = None,
    ) -> tuple[list[RunState], str | None]:
        """Runs newest first (by creation time), filtered by session, status and whether
        they are still active, one page of `limit` at a time: pass the returned cursor
        back for the next page (None after the last). Newest first because a list of runs
        is read from the latest; pages stay stable while new runs arrive."""
        values, next_cursor = self.list_runs_json(
            session_id=session_id, status=status, active=active, limit=limit, cursor=cursor
        )
        return [_state(v) for v in values], next_cursor

    def _newest_first(
        self, prefixes: Sequence[bytes], before: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        """`(created_at ‖ run, run key)` of the index entries under `prefixes`, merged in
        descending order, strictly before the cursor position `before`."""
        scans = [self._scan_desc(p, before) for p in prefixes]
        merged = scans[0] if len(scans) == 1 else heapq.merge(*scans, reverse=True)
        for key in merged:
            yield key, key[-16:]

    def _scan_desc(self, prefix: bytes, before: bytes | None) -> Iterator[bytes]:
        for key in self.store.scan_index_reverse(prefix, before):
            yield key[-_SUFFIX_SIZE:]

    def list_events(
        self,
        run_id: str | uuid.UUID,
        from_sequence: int = 0,
        limit: int = DEFAULT_EVENTS_LIMIT,
    ) -> list[AgentEvent]:
        """Up to `limit` stored events of a run from `from_sequence` on, in sequence order
        (empty for an unknown run; continue from the last sequence + 1)."""
        run = run_key(_run_id(run_id))
        start = _sequence(from_sequence, "from_sequence")
        limit = _limit(limit)
        self.refresh()
        events = []
        for _, data in self.store.iter_events(run, start):
            events.append(decode(data))
            if len(events) == limit:
                break
        return events


def _state(data: bytes) -> RunState:
    state: RunState = _STATE.validate_json(data)
    return state


def _bounded(run_ids: Iterable[str | uuid.UUID]) -> list[str | uuid.UUID]:
    if isinstance(run_ids, str | bytes):
        raise InvalidQueryError("run_ids must be a list of run ids, not one string")
    ids = list(run_ids)
    if len(ids) > MAX_BATCH:
        raise InvalidQueryError(
            f"{len(ids)} run ids in one batch; at most {MAX_BATCH}: split the batch"
        )
    return ids


def _chunks(items: Iterator[tuple[bytes, bytes]], size: int) -> Iterator[list[tuple[bytes, bytes]]]:
    chunk: list[tuple[bytes, bytes]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
