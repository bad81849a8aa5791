"""`RunStateClient`: `RunStateQuery`'s reads over HTTP, for services that hold no state dir.

    with RunStateClient("http://behest.internal:8000") as client:
        client.wait_for(delivery)          # read your own write (waits on the run's owner)
        state = client.get(run_id)         # RunState or None
        runs, cursor = client.list_runs(active=True)
        for update in client.watch(run_id): ...  # live, until the run ends (behest.watching)

Any node of a cluster (`behest node`) answers any request, so the URL may be a load
balancer. The methods, their arguments and their errors are `RunStateQuery`'s (`raw`
answers the JSON bytes instead of models): bad input
raises `InvalidQueryError` (the server's 400 message), an unknown run gives None. A `503`
(a partition between owners) is retried, as its `Retry-After` says, for up to
`retry_for` seconds, then raises `PartitionUnavailableError`. An answer served from a
standby copy is a state all the same; `last_staleness` says how stale it was.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic

import httpx
import orjson
from typing_extensions import TypeVar

from behest.errors import (
    InvalidQueryError,
    PartitionUnavailableError,
    QueryError,
    WaitTimeoutError,
)
from behest.events import AgentEvent, RunId, RunState, RunStatus, format_time, parse_run_id
from behest.watching import RemoteRunWatch

__all__ = ["DEFAULT_RETRY_FOR", "DEFAULT_TIMEOUT", "RunStateClient", "Staleness"]

DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_RETRY_FOR: Final = 15.0
_MAX_RETRY_PAUSE: Final = 1.0

T = TypeVar("T", default=RunState)

HEADER_STALE: Final = "x-behest-stale"
HEADER_LAG_RECORDS: Final = "x-behest-lag-records"
HEADER_LAG_SECONDS: Final = "x-behest-lag-seconds"


@dataclass(frozen=True)
class Staleness:
    """How far behind the log an answer from a standby copy was."""

    records: int
    seconds: float


class _Connection:
    """The pooled HTTP connection a client and its `raw` view share."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        retry_for: float,
        transport: httpx.BaseTransport | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_for = retry_for
        self.last_staleness: Staleness | None = None
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_keepalive_connections=16),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        not_found: bool = False,
        retry_for: float | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        """One request; 503s are retried as the server asks, other errors raised (a 404
        is returned when `not_found` says it means "unknown run")."""
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        headers = {"content-type": "application/json"} if content is not None else None
        while True:
            try:
                response = self.http.request(
                    method,
                    path,
                    params=params,
                    content=content,
                    headers=headers,
                    timeout=httpx.USE_CLIENT_DEFAULT if read_timeout is None else read_timeout,
                )
            except httpx.HTTPError as error:
                raise QueryError(
                    f"{self.base_url} did not answer {method} {path} ({error!r}): is the "
                    "behest node up, and the URL right?"
                ) from None
            if response.status_code == 503:
                pause = _retry_after(response)
                if time.monotonic() + pause > deadline:
                    raise PartitionUnavailableError(_message(response))
                time.sleep(pause)
                continue
            break
        self.last_staleness = _staleness(response)
        if response.status_code == 404 and not_found:
            return response
        if response.status_code >= 400:
            error_type = InvalidQueryError if response.status_code < 500 else QueryError
            raise error_type(_message(response))
        return response


class RunStateClient(Generic[T]):
    """The reads of `RunStateQuery`, answered by a behest node over HTTP, as `RunState`
    models (`client.raw`: the same reads as the contract's JSON bytes)."""

    _connection: _Connection
    finish: Callable[[bytes], T]

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._connection = _Connection(base_url, timeout, retry_for, transport)
        self.finish = _state  # type: ignore[assignment]  # T defaults to RunState

    @property
    def raw(self) -> RunStateClient[bytes]:
        """The same reads over the same connection, answering the stored JSON bytes."""
        view: RunStateClient[bytes] = RunStateClient.__new__(RunStateClient)
        view._connection = self._connection
        view.finish = _identity
        return view

    @property
    def base_url(self) -> str:
        return self._connection.base_url

    @property
    def last_staleness(self) -> Staleness | None:
        """How stale the last answer was, if a standby copy gave it (None: current)."""
        return self._connection.last_staleness

    def close(self) -> None:
        """Close the pooled connections."""
        self._connection.http.close()

    def __enter__(self) -> RunStateClient[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- current and point-in-time states -----------------------------------------------------

    def get(self, run_id: str | uuid.UUID) -> T | None:
        """The current state of a run, or None if it is unknown."""
        return self.get_at(run_id)

    def get_at(
        self,
        run_id: str | uuid.UUID,
        *,
        as_of: datetime | None = None,
        at_sequence: int | None = None,
    ) -> T | None:
        """The state after every event with timestamp <= `as_of` (or sequence <=
        `at_sequence`); None if the run had no event by then. Neither: the current state."""
        run = _run_id(run_id)
        if as_of is not None and at_sequence is not None:
            raise InvalidQueryError("give as_of or at_sequence, not both")
        params: dict[str, Any] = {}
        if as_of is not None:
            params["as_of"] = _time(as_of)
        if at_sequence is not None:
            params["at_sequence"] = at_sequence
        response = self._connection.request("GET", f"/runs/{run}", params=params, not_found=True)
        return None if response.status_code == 404 else self.finish(response.content)

    def get_many(
        self, run_ids: Iterable[str | uuid.UUID], *, as_of: datetime | None = None
    ) -> dict[RunId, T | None]:
        """States of up to 1000 runs in one request, keyed by run id in the order asked,
        duplicates once (None for unknown runs, or runs with no event by `as_of`)."""
        if isinstance(run_ids, str | bytes):
            raise InvalidQueryError("run_ids must be a list of run ids, not one string")
        ids = list(dict.fromkeys(_run_id(r) for r in run_ids))
        body: dict[str, Any] = {"run_ids": [str(r) for r in ids]}
        if as_of is not None:
            body["as_of"] = _time(as_of)
        response = self._connection.request("POST", "/runs/batch", content=orjson.dumps(body))
        found: dict[RunId, T | None] = dict.fromkeys(ids)
        for state in orjson.loads(response.content)["runs"]:
            found[parse_run_id(state["run_id"])] = self.finish(orjson.dumps(state))
        return found

    # --- listing ------------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        session_id: str | uuid.UUID | None = None,
        status: RunStatus | str | None = None,
        active: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[T], str | None]:
        """Runs newest first across every partition, one page at a time (see RunStateQuery)."""
        params: dict[str, Any] = {"limit": limit}
        if session_id is not None:
            params["session_id"] = str(session_id)
        if status is not None:
            params["status"] = status.value if isinstance(status, RunStatus) else status
        if active is not None:
            params["active"] = "true" if active else "false"
        if cursor is not None:
            params["cursor"] = cursor
        response = self._connection.request("GET", "/runs", params=params)
        page = orjson.loads(response.content)
        return [self.finish(orjson.dumps(s)) for s in page["runs"]], page["next_cursor"]

    def list_events(
        self, run_id: str | uuid.UUID, from_sequence: int = 0, limit: int = 100
    ) -> list[AgentEvent]:
        """Up to `limit` stored events of a run from `from_sequence` on (empty if unknown)."""
        params = {"from_sequence": from_sequence, "limit": limit}
        response = self._connection.request(
            "GET", f"/runs/{_run_id(run_id)}/events", params=params, not_found=True
        )
        if response.status_code == 404:
            return []
        return [AgentEvent.model_validate(e) for e in orjson.loads(response.content)["events"]]

    # --- watching -----------------------------------------------------------------------------

    def watch(self, run_id: str | uuid.UUID, *, from_sequence: int | None = None) -> RemoteRunWatch:
        """`RunStateQuery.watch` over HTTP: iterate (or `async for`) `RunUpdate`s until the
        run ends; a dropped connection is resumed where it stopped."""
        if from_sequence is not None and (
            isinstance(from_sequence, bool)
            or not isinstance(from_sequence, int)
            or from_sequence < 0
        ):
            raise InvalidQueryError(f"from_sequence must be an integer >= 0, not {from_sequence!r}")
        return RemoteRunWatch(
            self.base_url, _run_id(run_id), from_sequence, http=self._connection.http
        )

    # --- read your writes ---------------------------------------------------------------------

    def wait_for(self, position: Any, timeout: float = 10.0) -> None:
        """Return once the owner of the position's partition has folded it (a producer
        `Delivery` or `(partition, offset)`), so a read that follows sees that write."""
        if isinstance(position, tuple):
            partition, offset = position
        else:
            partition, offset = position.partition, position.offset
        if not (isinstance(partition, int) and isinstance(offset, int)):
            raise InvalidQueryError(f"a position is (partition, offset), not {position!r}")
        params = {"partition": partition, "offset": offset, "timeout": min(timeout, 30.0)}
        try:
            self._connection.request(
                "GET", "/wait", params=params, retry_for=timeout, read_timeout=timeout + 5.0
            )
        except PartitionUnavailableError as error:
            raise WaitTimeoutError(str(error)) from None


def _state(data: bytes) -> RunState:
    return RunState.model_validate_json(data)


def _identity(data: bytes) -> bytes:
    return data


def _run_id(value: str | uuid.UUID) -> RunId:
    return RunId(value) if isinstance(value, uuid.UUID) else parse_run_id(value)


def _time(moment: datetime) -> str:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise InvalidQueryError(f"as_of must be an aware datetime (e.g. tzinfo=UTC): {moment!r}")
    return format_time(moment)


def _message(response: httpx.Response) -> str:
    try:
        error = orjson.loads(response.content)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        error = response.text[:200]
    return f"{response.status_code} from {response.request.url}: {error}"


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.05), _MAX_RETRY_PAUSE)
    except ValueError:
        return _MAX_RETRY_PAUSE


def _staleness(response: httpx.Response) -> Staleness | None:
    if response.headers.get(HEADER_STALE) != "true":
        return None
    return Staleness(
        records=int(response.headers.get(HEADER_LAG_RECORDS, "0")),
        seconds=float(response.headers.get(HEADER_LAG_SECONDS, "0")),
    )
