"""What watching a run yields, and watching it over HTTP (no state dir, no server extra).

    with RunStateClient("http://127.0.0.1:8000") as client:
        for update in client.watch(run_id):          # or `async for`
            print(update.sequence, update.event, update.state.status)

`RemoteRunWatch` reads `GET /runs/{run_id}/watch` (Server-Sent Events, contract §7) and
pairs each `event` message with the `state` after it. A dropped connection is resumed with
`Last-Event-ID`, so the updates have no gap and no duplicate across reconnects.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import orjson

from behest.errors import InvalidQueryError, QueryError
from behest.events import AgentEvent, RunState, RunStatus

if TYPE_CHECKING:  # httpx is the `client` extra's: only watching over HTTP needs it
    import httpx

__all__ = ["Message", "RemoteRunWatch", "RunUpdate", "parse"]

RECONNECTS: Final = 5
"""Connection failures in a row after which a remote watch gives up."""

_ENDED: Final = "the stream ended before the run did"
_TERMINAL: Final = frozenset(s.value for s in RunStatus if s.is_terminal)


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """One step of a watched run: the event folded at `sequence` (None for the opening
    state) and the run's state after it. A late event (folded in its place after higher
    sequences) comes when it is folded: `sequence` below the updates before it, `state`
    the state at the highest sequence sent, re-folded with it."""

    sequence: int
    state: RunState
    event: AgentEvent | None


@dataclass(frozen=True, slots=True)
class Message:
    """One server-sent event as read back: its `event` type, `data` and `id`."""

    event: str
    data: str
    id: str | None = None


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """Messages from the lines of a stream (as `httpx.Response.iter_lines()` gives them);
    comments and retry hints are skipped."""
    reader = _Lines()
    for line in lines:
        message = reader.feed(line)
        if message is not None:
            yield message


class _Lines:
    """The SSE line protocol, one line at a time (shared by the sync and async readers)."""

    def __init__(self) -> None:
        self.event = "message"
        self.id: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> Message | None:
        if not line:
            message = Message(self.event, "\n".join(self.data), self.id) if self.data else None
            self.event, self.data = "message", []
            return message
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        elif field == "id":
            self.id = value
        return None


class _Watch:
    """One remote watch without its transport: the request's resume header, the lines of
    each response to `RunUpdate`s (each event with the state after it), when the stream is
    over, and how long to wait after a failed connection. The sync and async readers of
    `RemoteRunWatch` only move bytes."""

    def __init__(self, base_url: str, from_sequence: int | None) -> None:
        self.base_url = base_url
        self.last = None if from_sequence is None else from_sequence - 1
        self.event: AgentEvent | None = None
        self.done = False
        self.failures = 0
        self.lines = _Lines()

    def headers(self) -> dict[str, str]:
        """Resume after the last update yielded: no gap and no duplicate."""
        return {} if self.last is None else {"Last-Event-ID": str(self.last)}

    def refused(self, status: int) -> bool:
        """Whether the server refused (its body says why); 204: nothing to watch."""
        if status == 204:
            self.done = True
        self.lines = _Lines()  # a new response starts a new stream
        return status >= 400

    def line(self, line: str) -> RunUpdate | None:
        message = self.lines.feed(line)
        if message is None:
            return None
        self.failures = 0
        return self.message(message)

    def message(self, message: Message) -> RunUpdate | None:
        if message.event == "event":
            self.event = AgentEvent.model_validate_json(message.data)
        elif message.event == "state":
            head = orjson.loads(message.data)
            sequence = int(head["sequence"])
            event, self.event = self.event, None
            self.done = head["status"] in _TERMINAL
            if event is not None and event.sequence < sequence:  # late: the state re-folded
                return RunUpdate(event.sequence, RunState.model_validate(head), event)
            if self.last is not None and sequence <= self.last:
                return None
            self.last = sequence
            if event is not None and event.sequence != sequence:
                event = None
            return RunUpdate(sequence, RunState.model_validate(head), event)
        elif message.event == "deleted":
            self.done = True
        return None

    def ended(self) -> None:
        """The response ended: if the run did not, that is a dropped connection."""
        if not self.done:
            import httpx

            raise httpx.RemoteProtocolError(_ENDED)

    def failed(self, error: Exception) -> float:
        """Seconds to wait before reconnecting; gives up after `RECONNECTS` in a row."""
        self.failures += 1
        if self.failures > RECONNECTS:
            raise QueryError(
                f"{self.base_url} dropped the watch {self.failures} times in a row "
                f"({error!r}): is the behest node up?"
            ) from None
        return min(0.1 * 2.0**self.failures, 2.0)


def _timeout(connect: float) -> httpx.Timeout:
    """Connecting may time out; reading may not (a quiet run is silent between events)."""
    import httpx

    return httpx.Timeout(connect, read=None)


def _refusal(response: httpx.Response, body: bytes) -> QueryError:
    try:
        error = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        error = body[:200].decode(errors="replace")
    kind = InvalidQueryError if response.status_code < 500 else QueryError
    return kind(f"{response.status_code} from {response.request.url}: {error}")


class RemoteRunWatch:
    """`client.watch(run_id)`: an iterator and an async iterator of `RunUpdate`s read from
    a behest server, resumed after a dropped connection; ends after the terminal state."""

    def __init__(
        self,
        base_url: str,
        run_id: uuid.UUID,
        from_sequence: int | None = None,
        *,
        http: httpx.Client | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.path = f"/runs/{run_id}/watch"
        self.from_sequence = from_sequence
        self._http = http
        self._connect_timeout = connect_timeout

    def __iter__(self) -> Iterator[RunUpdate]:
        import httpx

        watch = _Watch(self.base_url, self.from_sequence)
        timeout = _timeout(self._connect_timeout)
        http = self._http or httpx.Client(base_url=self.base_url)
        try:
            while not watch.done:
                try:
                    with http.stream(
                        "GET", self.path, headers=watch.headers(), timeout=timeout
                    ) as response:
                        if watch.refused(response.status_code):
                            raise _refusal(response, response.read())
                        for line in response.iter_lines():
                            update = watch.line(line)
                            if update is not None:
                                yield update
                            if watch.done:
                                return
                        watch.ended()
                except httpx.TransportError as error:
                    time.sleep(watch.failed(error))
        finally:
            if self._http is None:
                http.close()

    async def __aiter__(self) -> AsyncIterator[RunUpdate]:
        import httpx

        watch = _Watch(self.base_url, self.from_sequence)
        timeout = _timeout(self._connect_timeout)
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            while not watch.done:
                try:
                    async with http.stream(
                        "GET", self.path, headers=watch.headers(), timeout=timeout
                    ) as response:
                        if watch.refused(response.status_code):
                            raise _refusal(response, await response.aread())
                        async for line in response.aiter_lines():
                            update = watch.line(line)
                            if update is not None:
                                yield update
                            if watch.done:
                                return
                        watch.ended()
                except httpx.TransportError as error:
                    await asyncio.sleep(watch.failed(error))
