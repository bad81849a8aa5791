"""Contract §4's run endpoints over the run-state projection's stored JSON.

    GET  /runs/{run_id}[?as_of=RFC3339 | ?at_sequence=N]   one state (404 if unknown)
    POST /runs/batch {"run_ids": [...], "as_of"?: ...}     {"runs": [...], "missing": [...]}
    GET  /runs?session_id=&status=&active=&limit=&cursor=  {"runs": [...], "next_cursor": ...}
    GET  /runs/{run_id}/events?from_sequence=&limit=       {"events": [...]}

Each is one plain function (a `DirectRoute`) over `RunStateQuery.raw`, so the stored bytes
go out as they are; "unknown run" and "no event by then" come from one read.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import FastAPI, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from behest.errors import RunNotFoundError
from behest.events import AgentEvent, RunState
from behest.read.query import (
    DEFAULT_EVENTS_LIMIT,
    DEFAULT_RUNS_LIMIT,
    MAX_BATCH,
    MAX_LIMIT,
    MAX_SEQUENCE,
    RunStateQuery,
)
from behest.read.routes import (
    BAD_INPUT,
    ActiveFilter,
    DirectRoute,
    ErrorBody,
    SessionFilter,
    StatusFilter,
    error_body,
    present,
)
from behest.read.watch import event_json
from behest.times import parse_time

__all__ = ["BatchRequest", "BatchResponse", "EventList", "RunList", "add_run_routes"]


class BatchRequest(BaseModel):
    """States of up to MAX_BATCH runs, now or as of a time."""

    model_config = ConfigDict(extra="forbid")

    run_ids: list[Annotated[str, Field(json_schema_extra={"format": "uuid"})]] = Field(
        max_length=MAX_BATCH, description=f"Run ids, at most {MAX_BATCH}."
    )
    as_of: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = Field(
        default=None, description="RFC 3339 time: each state after its events up to then."
    )


class BatchResponse(BaseModel):
    runs: list[RunState] = Field(description="Known runs' states, in the order asked.")
    missing: list[Annotated[str, Field(json_schema_extra={"format": "uuid"})]] = Field(
        description="Ids (canonical text) of runs unknown, or without an event by as_of."
    )


class RunList(BaseModel):
    runs: list[RunState] = Field(description="Newest first, by creation time.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null after the last page."
    )


class EventList(BaseModel):
    events: list[AgentEvent] = Field(description="In sequence order.")


_RUN_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorBody, "description": "Unknown run, or no event by the point asked."},
    **BAD_INPUT,
}
_RunId = Annotated[
    str,
    Path(description="The run id (a UUID).", json_schema_extra={"format": "uuid"}),
]
_AsOf = Annotated[
    str | None,
    Query(
        description="RFC 3339 time: the state after every event up to then.",
        json_schema_extra={"format": "date-time"},
    ),
]
_AtSequence = Annotated[
    int | None, Query(ge=0, le=MAX_SEQUENCE, description="The state after this sequence.")
]


def add_run_routes(app: FastAPI, query: RunStateQuery[bytes]) -> None:
    """Contract §4's run endpoints, each a `DirectRoute` over the stored JSON."""

    @app.get("/runs/batch", include_in_schema=False)
    async def batch_is_post() -> Response:
        body = error_body('use POST /runs/batch with {"run_ids": [...]}')
        return Response(body, status_code=405, media_type="application/json")

    def get_run(run_id: _RunId, as_of: _AsOf = None, at_sequence: _AtSequence = None) -> bytes:
        moment = None if as_of is None else parse_time(as_of)
        found = query.find_at(run_id, as_of=moment, at_sequence=at_sequence)
        if type(found) is bytes:  # the usual answer: no message to word
            return found
        return present(found, f"run {run_id}", as_of, at_sequence)

    def get_batch(request: BatchRequest) -> bytes:
        moment = None if request.as_of is None else parse_time(request.as_of)
        states: list[bytes] = []
        missing: list[str] = []
        for run, state in query.get_many(request.run_ids, as_of=moment).pairs():
            if state is None:
                missing.append(str(run))
            else:
                states.append(state)
        return b'{"runs":[' + b",".join(states) + b'],"missing":' + orjson.dumps(missing) + b"}"

    def list_runs(
        session_id: SessionFilter = None,
        status: StatusFilter = None,
        active: ActiveFilter = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_RUNS_LIMIT,
        cursor: Annotated[
            str | None, Query(description="next_cursor of the previous page.")
        ] = None,
    ) -> bytes:
        states, next_cursor = query.list_runs(
            session_id=session_id, status=status, active=active, limit=limit, cursor=cursor
        )
        cursor_json = orjson.dumps(next_cursor)
        return b'{"runs":[' + b",".join(states) + b'],"next_cursor":' + cursor_json + b"}"

    def list_events(
        run_id: _RunId,
        from_sequence: Annotated[int, Query(ge=0, le=MAX_SEQUENCE)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_EVENTS_LIMIT,
    ) -> bytes:
        events = query.list_events(run_id, from_sequence=from_sequence, limit=limit)
        if not events and query.get(run_id) is None:
            raise RunNotFoundError(f"run {run_id} is unknown")
        return b'{"events":[' + b",".join(map(event_json, events)) + b"]}"

    routes: list[tuple[str, Any, str, dict[str, Any]]] = [
        (
            "/runs/{run_id}",
            get_run,
            "GET",
            {
                "response_model": RunState,
                "responses": _RUN_ERRORS,
                "summary": "A run's state: current, as of a time, or at a sequence",
            },
        ),
        (
            "/runs/batch",
            get_batch,
            "POST",
            {
                "response_model": BatchResponse,
                "responses": BAD_INPUT,
                "summary": "States of many runs in one call",
            },
        ),
        (
            "/runs",
            list_runs,
            "GET",
            {
                "response_model": RunList,
                "responses": BAD_INPUT,
                "summary": "Runs newest first, by session, status or activity",
            },
        ),
        (
            "/runs/{run_id}/events",
            list_events,
            "GET",
            {
                "response_model": EventList,
                "responses": _RUN_ERRORS,
                "summary": "A run's events in sequence order",
            },
        ),
    ]
    for path, endpoint, method, options in routes:
        inline = endpoint is get_run  # one state; the others read pages or batches
        route = DirectRoute(path, endpoint, methods=[method], inline=inline, **options)
        app.router.routes.append(route)
