"""Read run states: current, at a point in time, in batches, by index, and after a write.

    with RunStateQuery.open(Settings()) as query:
        query.get(run_id)                                   # current state or None
        query.get_at(run_id, as_of=datetime(..., tzinfo=UTC))  # state back then
        query.get_many(run_ids)                             # one RocksDB multi-get
        runs, cursor = query.list_runs(status="failed")    # newest first, paginated
        query.wait_for(producer.emit(event).result())      # read your own write
        query.raw.get(run_id)                               # the same read, stored JSON bytes

The run-state projection's reads, on the generic `ProjectionReader` (which has the
details of freshness and point in time): this module adds only what is particular to
runs, i.e. run ids as keys, `RunState` models, and listings by session, status and
activity over the projection's indexes.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Generic

import orjson
from typing_extensions import TypeVar

from behest.codec import decode
from behest.config import DEFAULT_TOPIC, Settings
from behest.events import AgentEvent, RunId, RunState, RunStatus
from behest.projections.run_state import (
    INDEX_SUFFIX_SIZE,
    RunStateProjection,
    listing_prefixes,
)
from behest.read.inputs import (
    MAX_BATCH,
    MAX_LIMIT,
    MAX_SEQUENCE,
    bounded,
    check_active,
    check_limit,
    check_point,
    check_run_id,
    check_sequence,
    check_session_id,
    check_status,
    decode_cursor,
    encode_cursor,
)
from behest.read.reader import (
    DEFAULT_MAX_STALENESS,
    DEFAULT_WAIT_TIMEOUT,
    Absent,
    Freshness,
    Position,
    ProjectionReader,
    StoreReader,
)
from behest.read.run_models import run_states
from behest.read.states import States
from behest.times import parse_time

if TYPE_CHECKING:
    from behest.read.watch import RunsWatch, RunWatch

__all__ = [
    "DEFAULT_EVENTS_LIMIT",
    "DEFAULT_MAX_STALENESS",
    "DEFAULT_RUNS_LIMIT",
    "DEFAULT_WAIT_TIMEOUT",
    "MAX_BATCH",
    "MAX_LIMIT",
    "MAX_SEQUENCE",
    "Absent",
    "Freshness",
    "Position",
    "RunStateQuery",
    "States",
    "parse_time",
    "run_key",
]

DEFAULT_RUNS_LIMIT: Final = 50
DEFAULT_EVENTS_LIMIT: Final = 100

_STATE: Final = RunState.__pydantic_validator__
"""`RunState.model_validate_json` minus its wrapper, which costs about a tenth of the call; one
pydantic-core call per state measured faster than one over a JSON array of them."""

T = TypeVar("T", default=RunState)


def _state(data: bytes) -> RunState:
    state: RunState = _STATE.validate_json(data)
    return state


def _identity(data: bytes) -> bytes:
    return data


def run_key(run_id: str | uuid.UUID) -> bytes:
    """The store key of a run id (its 16 bytes), as `check_run_id(run_id).bytes` but
    without a `UUID` for the usual canonical text (a tenth of the cost): the text of 32 hex
    digits and 4 hyphens, which `uuid.UUID` accepts too. Anything else, and every error,
    goes through `check_run_id`."""
    if isinstance(run_id, uuid.UUID):
        return run_id.bytes
    if type(run_id) is str and len(run_id) == 36 and run_id.count("-") == 4:
        try:
            key = bytes.fromhex(run_id.replace("-", ""))
        except ValueError:
            pass
        else:
            if len(key) == 16:  # whitespace (which `fromhex` skips) leaves fewer bytes
                return key
    return check_run_id(run_id).bytes


def _uuid_bytes(run_id: uuid.UUID) -> bytes:
    return run_id.bytes


class RunStateQuery(Generic[T]):
    """Current, point-in-time, batch and indexed reads of the run-state projection, as
    `RunState` models (`query.raw`: the same reads as the stored JSON bytes)."""

    reader: ProjectionReader[Any]
    finish: Callable[[bytes], T]

    def __init__(
        self,
        store: StoreReader,
        projection: RunStateProjection | None = None,
        *,
        topic: str = DEFAULT_TOPIC,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        owns_store: bool = False,
    ) -> None:
        self.reader = ProjectionReader(
            store,
            projection or RunStateProjection(),
            topic=topic,
            max_staleness=max_staleness,
            owns_store=owns_store,
        )
        self.finish = _state  # type: ignore[assignment]  # T defaults to RunState

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        secondary: bool = True,
        max_staleness: float = DEFAULT_MAX_STALENESS,
    ) -> RunStateQuery[RunState]:
        """Open the run-state store under `settings.state_dir`; as a secondary by default,
        so a running projector is neither blocked nor locked out."""
        reader = ProjectionReader.open(
            settings, RunStateProjection(), secondary=secondary, max_staleness=max_staleness
        )
        return _over(reader, _state)

    @property
    def raw(self) -> RunStateQuery[bytes]:
        """The same reads, answering the stored JSON (the contract's, as the projector
        wrote it) instead of models: what the HTTP API serves."""
        return _over(self.reader, _identity)

    @property
    def store(self) -> StoreReader:
        return self.reader.store

    @property
    def topic(self) -> str:
        return self.reader.topic

    @property
    def max_staleness(self) -> float:
        return self.reader.max_staleness

    def close(self) -> None:
        """Release the store if this query opened it."""
        self.reader.close()

    def __enter__(self) -> RunStateQuery[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- freshness ----------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Catch up with the projector (see `ProjectionReader.refresh`)."""
        self.reader.refresh(force=force)

    def freshness(self) -> Freshness:
        """The stored next offsets per partition and when this view last synced."""
        return self.reader.freshness()

    def wait_for(
        self, position: Position | tuple[int, int], timeout: float = DEFAULT_WAIT_TIMEOUT
    ) -> None:
        """Return once the projection has folded `position` (a producer `Delivery` or
        `(partition, offset)`), so a read that follows sees that write."""
        self.reader.wait_for(position, timeout)

    # --- states -------------------------------------------------------------------------------

    def get(self, run_id: str | uuid.UUID) -> T | None:
        """The current state of a run, or None if it is unknown."""
        data = self.reader.get(run_key(run_id))
        return None if data is None else self.finish(data)

    def get_many(
        self, run_ids: Iterable[str | uuid.UUID], *, as_of: datetime | None = None
    ) -> States[RunId, T]:
        """States of up to `MAX_BATCH` runs in one multi-get, keyed by run id in the order
        asked, duplicates once (None for unknown runs); with `as_of`, each run's state at
        that time (None if it had no event by then). Read the answer as a dict: each
        `RunState` is built when first read (`behest.read.states`)."""
        checked = [check_run_id(r) for r in bounded(run_ids)]
        unique = dict(zip([r.bytes for r in checked], checked, strict=True))  # first wins
        micros, _ = check_point(as_of, None)
        keys = list(unique)
        values = self.reader.get_many(keys, micros)
        finish = None if self.finish is _identity else self.finish
        many = run_states if finish is _state else None  # T is RunState: built in bulk
        return States(list(unique.values()), keys, values, finish, _uuid_bytes, many)  # type: ignore[arg-type]

    def find_at(
        self,
        run_id: str | uuid.UUID,
        *,
        as_of: datetime | None = None,
        at_sequence: int | None = None,
    ) -> T | Absent:
        """`get_at`, saying why there is no state: `Absent.UNKNOWN` (no such run) or
        `Absent.NOT_YET` (no event by the point asked), from one read."""
        micros, sequence = check_point(as_of, at_sequence)
        data = self.reader.get_at(run_key(run_id), micros, sequence)
        return data if isinstance(data, Absent) else self.finish(data)

    def get_at(
        self,
        run_id: str | uuid.UUID,
        *,
        as_of: datetime | None = None,
        at_sequence: int | None = None,
    ) -> T | None:
        """The state after every event with timestamp <= `as_of` (or sequence <=
        `at_sequence`); None if the run had no event by then. Neither: the current state."""
        found = self.find_at(run_id, as_of=as_of, at_sequence=at_sequence)
        return None if isinstance(found, Absent) else found

    # --- watching (behest.read.watch) ---------------------------------------------------------

    def watch(self, run_id: str | uuid.UUID, *, from_sequence: int | None = None) -> RunWatch:
        """A run's updates as they are folded: iterate (or `async for`) `RunUpdate`s, first
        the current state, then each event with the state after it, until the run ends.
        With `from_sequence`, the stored events from that sequence on instead of the
        current state, then live: no gap, no duplicate. A run with no event yet can be
        watched; its updates start with its first event."""
        from behest.read.watch import RunWatch

        key = check_run_id(run_id).bytes
        start = None if from_sequence is None else check_sequence(from_sequence, "from_sequence")
        return RunWatch(self.reader, key, start)

    def watch_runs(
        self,
        *,
        session_id: str | uuid.UUID | None = None,
        status: RunStatus | str | None = None,
        active: bool | None = None,
    ) -> RunsWatch:
        """The states of runs as they change (those matching the filters), for list views;
        iterate (or `async for`) until you stop."""
        from behest.read.watch import RunsWatch

        return RunsWatch(
            self.reader,
            session_id=None if session_id is None else str(check_session_id(session_id)),
            status=None if status is None else check_status(status).value,
            active=check_active(active),
        )

    # --- listings -----------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        session_id: str | uuid.UUID | None = None,
        status: RunStatus | str | None = None,
        active: bool | None = None,
        limit: int = DEFAULT_RUNS_LIMIT,
        cursor: str | None = None,
    ) -> tuple[list[T], str | None]:
        """Runs newest first (by creation time), filtered by session, status and whether
        they are still active, one page of `limit` at a time: pass the returned cursor
        back for the next page (None after the last). Newest first because a list of runs
        is read from the latest; pages stay stable while new runs arrive."""
        session = None if session_id is None else check_session_id(session_id)
        wanted = None if status is None else check_status(status)
        active = check_active(active)
        limit = check_limit(limit)
        before = None if cursor is None else decode_cursor(cursor, INDEX_SUFFIX_SIZE)
        if wanted is not None and active is not None and wanted.is_terminal == active:
            return [], None  # e.g. status=completed with active=true: nothing can match
        prefixes, check = listing_prefixes(session, wanted, active)
        keep = _status_filter(wanted, active) if check else None
        keys = self._newest_first(prefixes, before)
        found, last = self.reader.listed(keys, limit, keep)
        finish = self.finish
        next_cursor = None if last is None else encode_cursor(last[-INDEX_SUFFIX_SIZE:])
        if finish is _state:  # T is RunState: a page's models built in bulk
            return run_states([v for _, v in found]), next_cursor  # type: ignore[return-value]
        return [finish(v) for _, v in found], next_cursor

    def _newest_first(self, prefixes: list[bytes], before: bytes | None) -> Iterator[bytes]:
        """Index keys under `prefixes`, merged by `created_at ‖ run` descending, strictly
        before the cursor position `before`."""
        scans = [
            self.reader.index(p, before=None if before is None else p + before, reverse=True)
            for p in prefixes
        ]
        if len(scans) == 1:
            return scans[0]
        return heapq.merge(*scans, key=_suffix, reverse=True)

    def list_events(
        self,
        run_id: str | uuid.UUID,
        from_sequence: int = 0,
        limit: int = DEFAULT_EVENTS_LIMIT,
    ) -> list[AgentEvent]:
        """Up to `limit` stored events of a run from `from_sequence` on, in sequence order
        (empty for an unknown run; continue from the last sequence + 1)."""
        key = run_key(run_id)
        start = check_sequence(from_sequence, "from_sequence")
        return [decode(data) for data in self.reader.events(key, start, check_limit(limit))]


def _over(reader: ProjectionReader[Any], finish: Callable[[bytes], T]) -> RunStateQuery[T]:
    """A query over an open reader, with its own last step."""
    query: RunStateQuery[T] = RunStateQuery.__new__(RunStateQuery)
    query.reader = reader
    query.finish = finish
    return query


def _suffix(index_key: bytes) -> bytes:
    return index_key[-INDEX_SUFFIX_SIZE:]


def _status_filter(wanted: RunStatus | None, active: bool | None) -> Callable[[bytes], bool]:
    """Whether a stored state has the status asked for (for a session's listing)."""

    def keep(data: bytes) -> bool:
        status = RunStatus(orjson.loads(data)["status"])
        if wanted is not None and status != wanted:
            return False
        return active is None or status.is_terminal != active

    return keep
