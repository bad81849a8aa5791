"""Server-Sent Events for watching (contract §7): the two watch routes and the wire format.

    GET /runs/{run_id}/watch[?from_sequence=N]   (or header Last-Event-ID: N-1)
        id: 7            event: event   data: {the event, as /runs/{run_id}/events shows it}
        id: 7            event: state   data: {the run's state after it}
    GET /runs/watch?session_id=&status=&active=
        event: state     data: {a run's state, each time it changes}
        event: deleted   data: {"run_id": "…", "deleted": true}   (whatever the filters)

A late event (one that arrives after higher sequences of its run, folded in its place)
is sent when it is folded, out of order: `id: L` `event: event` with it, then
`id: P` `event: state` with the state at P, the stream's position, as re-folded with it.
A resumed stream replays the events after the last id, and sends the late events below it
that were still missing when it reconnected; one folded while the client was away is in
the states sent from then on, not sent itself.

A stream opens with the current state (or, resuming, with the stored events after the
last one seen), sends a comment every `KEEPALIVE_S` seconds of quiet so proxies keep it
open, and ends after the state with a terminal status. A resumed stream of a run that has
already ended answers 204, which tells a browser's EventSource to stop reconnecting.
`behest.watching` reads the format back (for clients).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response, StreamingResponse

from behest.errors import InvalidQueryError, QueryError
from behest.events import RunStatus
from behest.read.query import MAX_SEQUENCE, RunStateQuery
from behest.read.routes import (
    ActiveFilter,
    ErrorBody,
    SessionFilter,
    StatusFilter,
    error_answer,
)
from behest.read.watch import Change, RunDeleted

__all__ = ["KEEPALIVE_S", "MEDIA_TYPE", "encode", "watch_routes"]

MEDIA_TYPE: Final = "text/event-stream"
KEEPALIVE_S: Final = 15.0
"""Seconds of quiet after which a stream sends a comment line."""

RETRY_MS: Final = 1000
"""How long a browser waits before it reconnects a dropped stream."""

_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_KEEPALIVE: Final = b": keep-alive\n\n"


def encode(event: str, data: bytes, id: int | None = None) -> bytes:
    """One message; `data` must be one line (compact JSON is)."""
    head = b"" if id is None else b"id: %d\n" % id
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def _change(change: Change) -> bytes:
    if change.deleted:
        return encode("deleted", b"{}", None)
    # A late event's state is the corrected one at the stream's position (`at`): the ids
    # read L, then back up to where the stream was, so a resume starts after the latter.
    state = encode("state", change.state, change.at if change.late else change.sequence)
    if change.event_json is None:
        return state
    return encode("event", change.event_json, change.sequence) + state


def _refused(error: QueryError) -> Response:
    status, body = error_answer(error)
    return Response(body, status, media_type="application/json")


def _resume_point(from_sequence: int | None, last_event_id: str | None) -> int | None:
    """The first sequence to send, from `?from_sequence=` or the `Last-Event-ID` header."""
    if last_event_id is None or from_sequence is not None:
        return from_sequence
    try:
        last = int(last_event_id)
    except ValueError:
        last = -2
    if not -1 <= last < MAX_SEQUENCE:
        raise InvalidQueryError(
            f"Last-Event-ID {last_event_id!r} is not a sequence this stream sent: "
            "send the id of the last message received, or omit the header"
        )
    return last + 1


_RunId = Annotated[
    str,
    Path(description="The run id (a UUID).", json_schema_extra={"format": "uuid"}),
]
_STREAM: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
        "description": "A stream of Server-Sent Events (see the operation's description).",
    },
    "4XX": {"model": ErrorBody, "description": "Bad input: the body says what is wrong."},
}


def watch_routes(query: RunStateQuery[Any], *, keepalive: float = KEEPALIVE_S) -> APIRouter:
    """The watch routes over `query`'s shared tailer (include before `/runs/{run_id}`)."""
    router = APIRouter()

    @router.get(
        "/runs/watch",
        operation_id="watch_runs",
        tags=["watch"],
        response_class=StreamingResponse,
        responses=_STREAM,
        summary="Watch run states change (for list views)",
        description="`event: state` with a run's state each time it changes; runs that "
        "match the filters only. `event: deleted` with `{run_id, deleted: true}` for each "
        "run deleted (whatever the filters). Keep-alive comments while nothing changes.",
    )
    async def watch_runs(
        session_id: SessionFilter = None,
        status: StatusFilter = None,
        active: ActiveFilter = None,
    ) -> Response:
        try:
            feed = query.watch_runs(session_id=session_id, status=status, active=active)
        except QueryError as error:
            return _refused(error)

        async def stream() -> AsyncIterator[bytes]:
            feed.start()  # registered before the first line: a client that read it misses nothing
            try:
                yield b"retry: %d\n\n" % RETRY_MS
                async for state in feed.astates(keepalive):
                    if state is None:
                        yield _KEEPALIVE
                    elif isinstance(state, RunDeleted):
                        yield encode("deleted", state.json())
                    else:
                        yield encode("state", state)
            finally:
                feed.close()

        return StreamingResponse(stream(), media_type=MEDIA_TYPE, headers=_HEADERS)

    @router.get(
        "/runs/{run_id}/watch",
        operation_id="watch_run",
        tags=["watch"],
        response_class=StreamingResponse,
        responses={
            **_STREAM,
            204: {"description": "Resumed after the run's last state: nothing more to send."},
        },
        summary="Watch a run live (Server-Sent Events)",
        description="First `event: state` with the current state; then, for each event "
        "folded, `event: event` (as in /runs/{run_id}/events) and `event: state` (the state "
        "after it). Each message's `id` is its sequence. Resume with `Last-Event-ID: N` or "
        "`?from_sequence=N+1`: the stored events after N, then live, no gap, no duplicate. "
        "Ends after a terminal state. A run with no event yet starts with its first event.",
    )
    async def watch_run(
        run_id: _RunId,
        from_sequence: Annotated[
            int | None,
            Query(
                ge=0,
                le=MAX_SEQUENCE,
                description="Replay the stored events from this sequence on, then live.",
            ),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                description="The id of the last message received: resume after it.",
            ),
        ] = None,
    ) -> Response:
        try:
            start = _resume_point(from_sequence, last_event_id)
            watch = query.watch(run_id, from_sequence=start)
            current = None if start is None else query.raw.get(run_id)
        except QueryError as error:
            return _refused(error)
        if current is not None and start is not None:
            head = orjson.loads(current)
            if head["status"] in _TERMINAL and head["sequence"] < start:
                return Response(status_code=204, headers=_HEADERS)

        async def stream() -> AsyncIterator[bytes]:
            watch.start()  # registered before the first line: a client that read it misses nothing
            try:
                yield b"retry: %d\n\n" % RETRY_MS
                async for batch in watch.abatches(keepalive):
                    yield b"".join(map(_change, batch)) if batch else _KEEPALIVE
            finally:
                watch.close()

        return StreamingResponse(stream(), media_type=MEDIA_TYPE, headers=_HEADERS)

    return router


_TERMINAL: Final = frozenset(s.value for s in RunStatus if s.is_terminal)
