"""The HTTP query API (contract §4): FastAPI over a `RunStateQuery`, OpenAPI at /openapi.json.

    GET  /runs/{run_id}[?as_of=RFC3339 | ?at_sequence=N]   one state (404 if unknown)
    POST /runs/batch {"run_ids": [...], "as_of"?: ...}     {"runs": [...], "missing": [...]}
    GET  /runs?session_id=&status=&active=&limit=&cursor=  {"runs": [...], "next_cursor": ...}
    GET  /runs/{run_id}/events?from_sequence=&limit=       {"events": [...]}
    GET  /runs/{run_id}/watch · GET /runs/watch            Server-Sent Events (behest.read.sse)
    GET  /projections[/{name}/...]                         any projection served (see below)
    GET  /healthz · GET /metrics

The run endpoints are `DirectRoute`s (behest.read.routes): one plain function each, one
error mapping for all, no FastAPI parameter machinery per request. States are served as
the bytes the projector stored (already the contract's JSON), through `query.raw`, so no
model is built. Every other projection served is read through the same generic reader at
`/projections/{name}/...` (behest.read.projection_routes).

Every answer that is not a 2xx has one shape, `{"error": "<what is wrong and what to
do>", "detail": <structured, or null>}`: 400 for bad input, 404 for an unknown run, 413
for an oversized body; 5xx only if the store itself fails (503) or on a bug (500, logged).
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Final, Literal, cast

import orjson
import uvicorn
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from behest.errors import RunNotFoundError, WaitTimeoutError
from behest.events import AgentEvent, RunState, RunStatus
from behest.read.metrics import CONTENT_TYPE, MetricsSource, QueryMetrics
from behest.read.projection_routes import ErrorBody, add_projection_routes
from behest.read.query import (
    DEFAULT_EVENTS_LIMIT,
    DEFAULT_RUNS_LIMIT,
    MAX_BATCH,
    MAX_LIMIT,
    MAX_SEQUENCE,
    Absent,
    RunStateQuery,
)
from behest.read.reader import ProjectionReader
from behest.read.routes import (
    DirectRoute,
    error_answer,
    error_body,
    match_direct,
    validation_body,
)
from behest.read.sse import watch_routes
from behest.read.watch import event_json
from behest.times import parse_time

__all__ = [
    "MAX_BODY_BYTES",
    "BackgroundServer",
    "BatchRequest",
    "BatchResponse",
    "ErrorBody",
    "EventList",
    "Health",
    "RunList",
    "create_app",
    "serve",
]

MAX_WAIT: Final = 30.0
"""Longest `GET /wait` (seconds); a client that wants longer asks again."""

MAX_BODY_BYTES: Final = 1 << 20
"""Largest request body accepted; a full batch of ids is about 40 KiB."""

JSON: Final = "application/json"


# --- the wire models (they make /openapi.json; answers are built from stored bytes) ----------


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


class Folded(BaseModel):
    partition: int
    offset: int = Field(description="The position is folded: reads that follow see it.")


class Health(BaseModel):
    status: Literal["ok"]
    topic: str
    offsets: dict[str, int] = Field(description="Next offset folded, per partition.")
    synced_at: datetime = Field(description="Answers include every write made before this.")
    max_staleness_s: float


# --- answers ----------------------------------------------------------------------------------


def _json(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=content, status_code=status, media_type=JSON, headers=headers)


def _error(status: int, error: str, detail: Any = None) -> Response:
    return _json(error_body(error, detail), status)


def _validation_error(error: RequestValidationError) -> Response:
    problems = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in error.errors()
    ]
    return _json(validation_body(problems), 400)


class _Instrumented:
    """ASGI middleware: times every request per route template, refuses bodies larger than
    `MAX_BODY_BYTES` before anything reads them, and hands a request whose route is a
    `DirectRoute` straight to it (the same route the router would pick, minus FastAPI's
    middleware stack on the way)."""

    def __init__(self, app: ASGIApp, metrics: QueryMetrics, routes: Sequence[Any]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        template = None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            answer = _oversized(scope)
            direct = None if answer is not None else match_direct(self.routes, scope)
            if direct is not None:
                template = direct.path
                status = await direct.serve(scope, receive, send)
            elif answer is not None:
                await answer(scope, receive, send_and_note)
            else:
                _label_body_json(scope)
                await self.app(scope, receive, send_and_note)
        finally:
            if template is None:
                template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.observe(method, template, status, time.perf_counter() - started)


_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name in /metrics; any other is `other`, so labels stay few."""


def _label_body_json(scope: Scope) -> None:
    """Every body this API takes is JSON: a POST labelled otherwise (`curl -d` says it is a
    form) is read as JSON rather than refused for its label."""
    if scope["method"] == "POST":
        headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
        scope["headers"] = [*headers, (b"content-type", b"application/json")]


def _oversized(scope: Scope) -> Response | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return _error(400, f"Content-Length {value!r} is not a number")
            if length > MAX_BODY_BYTES:
                return _error(
                    413,
                    f"request body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit: "
                    f"send at most {MAX_BATCH} run ids per batch",
                )
    return None


# --- the app ----------------------------------------------------------------------------------

_BAD_INPUT: Final[dict[int | str, dict[str, Any]]] = {
    "4XX": {"model": ErrorBody, "description": "Bad input (400), oversized body (413)."},
}
_RUN_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorBody, "description": "Unknown run, or no event by the point asked."},
    **_BAD_INPUT,
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


def _package_version() -> str:
    try:
        return version("behest")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "0+unknown"


def create_app(
    query: RunStateQuery[Any] | None,
    metrics_source: MetricsSource | None = None,
    projections: Sequence[ProjectionReader[Any]] = (),
    *,
    telemetry: bool = False,
) -> FastAPI:
    """The HTTP API over `query` (the /runs endpoints; None: none) and the `projections`
    (under /projections/{name}); `metrics_source` (e.g. `lambda: projector.metrics`) adds
    the projector's lag and counters to /metrics; `telemetry` turns on FastAPI's own
    OpenTelemetry spans, metrics and logs (global providers; `BEHEST_OTEL=true`)."""
    readers = ([] if query is None else [query.reader]) + [
        r for r in projections if query is None or r is not query.reader
    ]
    if not readers:
        raise ValueError("nothing to serve: give the run-state query or a projection")
    app = FastAPI(
        title="behest",
        version=_package_version(),
        description="Current, point-in-time and batch states of agent runs, and of every "
        "projection served.",
        # Off unless asked for: /metrics is Prometheus, and FastAPI's OpenTelemetry hooks
        # cost every request provider look-ups (about a tenth of a state read).
        telemetry={
            "tracing": telemetry,
            "metrics": telemetry,
            "logs": telemetry,
            "operation_spans": telemetry,
        },
    )
    metrics = QueryMetrics(readers[0], metrics_source)
    app.add_middleware(_Instrumented, metrics=metrics, routes=app.router.routes)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError) -> Response:
        return _validation_error(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        where = f"{request.method} {request.url.path}"
        if error.status_code == 404:
            message = f"no endpoint {where}: /openapi.json lists them"
        elif error.status_code == 405:
            message = f"{where} is not allowed: /openapi.json lists the methods"
        elif error.status_code == 400:  # FastAPI could not parse the body at all
            message = f"the request body cannot be parsed as JSON ({error.detail})"
        else:
            message = str(error.detail)
        return _error(error.status_code, message)

    @app.exception_handler(Exception)
    async def any_error(request: Request, error: Exception) -> Response:
        status, body = error_answer(error, f"{request.method} {request.url.path}")
        return _json(body, status)

    if query is not None:
        app.include_router(watch_routes(query))  # before /runs/{run_id}, which takes any id
        _add_run_routes(app, query.raw)
    add_projection_routes(app, readers)

    @app.get(
        "/wait",
        response_model=Folded,
        responses={
            **_BAD_INPUT,
            503: {"model": ErrorBody, "description": "Not folded within the timeout."},
        },
        summary="Read your writes: returns once the write at a position is folded",
    )
    def wait(
        partition: Annotated[int, Query(ge=0, description="The write's partition.")],
        offset: Annotated[int, Query(ge=0, description="The write's offset.")],
        timeout: Annotated[
            float, Query(gt=0, le=MAX_WAIT, description="Seconds to wait at most.")
        ] = 10.0,
    ) -> Response:
        try:
            readers[0].wait_for((partition, offset), timeout=timeout)
        except WaitTimeoutError as error:
            return _json(error_body(str(error)), 503, headers={"retry-after": "1"})
        return _json(orjson.dumps({"partition": partition, "offset": offset}))

    @app.get("/healthz", response_model=Health, summary="Liveness, and how fresh answers are")
    def healthz() -> Response:
        fresh = readers[0].freshness()
        return _json(orjson.dumps({"status": "ok", **fresh.to_json_dict()}))

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        summary="Prometheus metrics",
    )
    def prometheus() -> Response:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE)

    return app


def _add_run_routes(app: FastAPI, query: RunStateQuery[bytes]) -> None:
    """Contract §4's run endpoints, each a `DirectRoute` over the stored JSON."""

    @app.get("/runs/batch", include_in_schema=False)
    async def batch_is_post() -> Response:
        return _error(405, 'use POST /runs/batch with {"run_ids": [...]}')

    def get_run(run_id: _RunId, as_of: _AsOf = None, at_sequence: _AtSequence = None) -> bytes:
        moment = None if as_of is None else parse_time(as_of)
        found = query.find_at(run_id, as_of=moment, at_sequence=at_sequence)
        if found is Absent.UNKNOWN:
            raise RunNotFoundError(f"run {run_id} is unknown")
        if found is Absent.NOT_YET:
            point = f"as of {as_of}" if as_of is not None else f"at sequence {at_sequence}"
            raise RunNotFoundError(f"run {run_id} had no event {point}")
        return found

    def get_batch(request: BatchRequest) -> bytes:
        moment = None if request.as_of is None else parse_time(request.as_of)
        found = query.get_many(request.run_ids, as_of=moment)
        states = [v for v in found.values() if v is not None]
        missing = [str(run) for run, v in found.items() if v is None]
        return b'{"runs":[' + b",".join(states) + b'],"missing":' + orjson.dumps(missing) + b"}"

    def list_runs(
        session_id: Annotated[
            str | None,
            Query(description="Only this session's runs.", json_schema_extra={"format": "uuid"}),
        ] = None,
        status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
        active: Annotated[
            bool | None,
            Query(description="true: only runs not yet finished; false: only finished runs."),
        ] = None,
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
                "responses": _BAD_INPUT,
                "summary": "States of many runs in one call",
            },
        ),
        (
            "/runs",
            list_runs,
            "GET",
            {
                "response_model": RunList,
                "responses": _BAD_INPUT,
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
        app.router.routes.append(DirectRoute(path, endpoint, methods=[method], **options))


# --- serving ----------------------------------------------------------------------------------


def _config(
    query: RunStateQuery[Any] | None,
    host: str,
    port: int,
    metrics_source: MetricsSource | None,
    log_level: str,
    projections: Sequence[ProjectionReader[Any]] = (),
    telemetry: bool = False,
) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(query, metrics_source, projections, telemetry=telemetry),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # /metrics counts requests; a line per request costs throughput
        lifespan="off",
    )


def serve(
    query: RunStateQuery[Any] | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    metrics_source: MetricsSource | None = None,
    log_level: str = "info",
    projections: Sequence[ProjectionReader[Any]] = (),
    telemetry: bool = False,
) -> None:
    """Serve the API until interrupted (Ctrl-C); binds loopback unless told otherwise.

    Meant to own its process: it freezes everything allocated so far out of the garbage
    collector's reach, since a full collection over FastAPI's and pydantic's start-up
    objects pauses every request in flight for tens of milliseconds.
    """
    config = _config(query, host, port, metrics_source, log_level, projections, telemetry)
    cast(FastAPI, config.app).openapi()  # built now, so it is frozen with the rest
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run()


class BackgroundServer:
    """The API on a thread of this process, e.g. beside a projector or in tests.

        with BackgroundServer(query) as server:
            httpx.get(f"{server.url}/runs/{run_id}")

    `port=0` picks a free port; `url` says which.
    """

    def __init__(
        self,
        query: RunStateQuery[Any] | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_source: MetricsSource | None = None,
        log_level: str = "warning",
        projections: Sequence[ProjectionReader[Any]] = (),
    ) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = _config(query, host, self.port, metrics_source, log_level, projections)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish in-flight requests and stop."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
