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


class _Pairing:
    """Messages to `RunUpdate`s: each event with the state after it; remembers the last
    sequence for a resume and whether the stream is over."""

    def __init__(self, from_sequence: int | None) -> None:
        self.last = None if from_sequence is None else from_sequence - 1
        self.event: AgentEvent | None = None
        self.done = False

    def headers(self) -> dict[str, str]:
        return {} if self.last is None else {"Last-Event-ID": str(self.last)}

    def feed(self, message: Message) -> RunUpdate | None:
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

    def _failed(self, failures: int, error: Exception) -> float:
        if failures > RECONNECTS:
            raise QueryError(
                f"{self.base_url} dropped the watch {failures} times in a row ({error!r}): "
                "is the behest node up?"
            ) from None
        return min(0.1 * 2.0**failures, 2.0)

    def __iter__(self) -> Iterator[RunUpdate]:
        import httpx

        pairing, failures = _Pairing(self.from_sequence), 0
        timeout = _timeout(self._connect_timeout)
        http = self._http or httpx.Client(base_url=self.base_url)
        try:
            while not pairing.done:
                try:
                    with http.stream(
                        "GET",
                        self.path,
                        headers=pairing.headers(),
                        timeout=timeout,
                    ) as response:
                        if response.status_code == 204:
                            return
                        if response.status_code >= 400:
                            raise _refusal(response, response.read())
                        for message in parse(response.iter_lines()):
                            failures = 0
                            update = pairing.feed(message)
                            if update is not None:
                                yield update
                            if pairing.done:
                                return
                        raise httpx.RemoteProtocolError(_ENDED)
                except httpx.TransportError as error:
                    failures += 1
                    time.sleep(self._failed(failures, error))
        finally:
            if self._http is None:
                http.close()

    async def __aiter__(self) -> AsyncIterator[RunUpdate]:
        import httpx

        pairing, failures = _Pairing(self.from_sequence), 0
        timeout = _timeout(self._connect_timeout)
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            while not pairing.done:
                try:
                    async with http.stream(
                        "GET",
                        self.path,
                        headers=pairing.headers(),
                        timeout=timeout,
                    ) as response:
                        if response.status_code == 204:
                            return
                        if response.status_code >= 400:
                            raise _refusal(response, await response.aread())
                        lines = _Lines()
                        async for line in response.aiter_lines():
                            message = lines.feed(line)
                            if message is None:
                                continue
                            failures = 0
                            update = pairing.feed(message)
                            if update is not None:
                                yield update
                            if pairing.done:
                                return
                        raise httpx.RemoteProtocolError(_ENDED)
                except httpx.TransportError as error:
                    failures += 1
                    await asyncio.sleep(self._failed(failures, error))
