"""The HTTP query API (contract §4): FastAPI over a `RunStateQuery`, OpenAPI at /openapi.json.

    GET  /runs/{run_id}[?as_of=RFC3339 | ?at_sequence=N]   one state (404 if unknown)
    POST /runs/batch {"run_ids": [...], "as_of"?: ...}     {"runs": [...], "missing": [...]}
    GET  /runs?session_id=&status=&active=&limit=&cursor=  {"runs": [...], "next_cursor": ...}
    GET  /runs/{run_id}/events?from_sequence=&limit=       {"events": [...]}
    GET  /runs/{run_id}/watch · GET /runs/watch            Server-Sent Events (behest.read.sse)
    GET  /projections[/{name}/...]                         any projection served (see below)
    GET  /healthz · GET /readyz · GET /metrics               (see behest.read.health)

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

import time
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from behest.errors import WaitTimeoutError
from behest.read.console import add_console, name_operations
from behest.read.health import ProjectorWatch
from behest.read.metrics import CONTENT_TYPE, MetricsSource, QueryMetrics
from behest.read.projection_routes import add_projection_routes
from behest.read.query import (
    MAX_BATCH,
    RunStateQuery,
)
from behest.read.reader import ProjectionReader
from behest.read.routes import (
    BAD_INPUT,
    DirectDispatch,
    ErrorBody,
    error_answer,
    error_body,
    validation_body,
)
from behest.read.run_routes import (
    BatchRequest,
    BatchResponse,
    EventList,
    RunList,
    add_run_routes,
)
from behest.read.sse import watch_routes

__all__ = [
    "MAX_BODY_BYTES",
    "BatchRequest",
    "BatchResponse",
    "ErrorBody",
    "EventList",
    "Health",
    "ProjectorState",
    "Readiness",
    "RunList",
    "create_app",
]

MAX_WAIT: Final = 30.0
"""Longest `GET /wait` (seconds); a client that wants longer asks again."""

MAX_BODY_BYTES: Final = 1 << 20
"""Largest request body accepted; a full batch of ids is about 40 KiB."""

JSON: Final = "application/json"


# --- the wire models (they make /openapi.json; answers are built from stored bytes) ----------


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    reason: str | None = Field(description="Why not ready; null when ready.")
    projector: ProjectorState | None


class Folded(BaseModel):
    partition: int
    offset: int = Field(description="The position is folded: reads that follow see it.")


class ProjectorState(BaseModel):
    alive: bool = Field(description="It beat within the staleness bound and did not stop.")
    ready: bool = Field(description="Alive, owning partitions, none beyond the lag bound.")
    reason: str | None = Field(description="Why not alive or not ready; null when it is.")
    pid: int | None
    heartbeat_age_s: float | None
    assigned: list[int]
    lag: dict[str, int] = Field(description="Records behind the log, per owned partition.")
    lag_seconds: dict[str, float] = Field(description="Seconds behind the log, per partition.")


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="ok: the store answers and its projector is alive; degraded: the store "
        "answers but the projector is not alive (see projector.reason)."
    )
    projector: ProjectorState | None = Field(
        description="The projector writing the store, from its heartbeat (null: not watched)."
    )
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


class _API(FastAPI):
    """FastAPI with a front desk: times every HTTP request per route template (/metrics),
    refuses bodies larger than `MAX_BODY_BYTES` before anything reads them, and hands a
    request whose route is a `DirectRoute` straight to it (the same route the router would
    pick), ahead of Starlette's middleware stack and router: those layers cost more than
    the state read they carry. Everything else goes through FastAPI as usual, and so does
    everything when FastAPI's own telemetry is on (its spans are made in those layers)."""

    front: tuple[QueryMetrics, DirectDispatch | None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        metrics, direct = front
        answer = _oversized(scope)
        found = None if answer is not None or direct is None else direct(scope)
        status = 500
        if found is not None:
            route, params = found
            try:
                status = await route.serve(scope, receive, send, params)
            finally:
                metrics.observe(_method(scope), route.path, status, time.perf_counter() - started)
            return

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if answer is not None:
                await answer(scope, receive, send_and_note)
            else:
                _label_body_json(scope)
                await super().__call__(scope, receive, send_and_note)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.observe(_method(scope), template, status, time.perf_counter() - started)


def _method(scope: Scope) -> str:
    method: str = scope["method"]
    return method if method in _METHODS else "other"


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


def _package_version() -> str:
    try:
        return version("behest")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "0+unknown"


def create_app(
    query: RunStateQuery[Any] | None,
    metrics_source: MetricsSource | None = None,
    projections: Sequence[ProjectionReader[Any]] = (),
    watch: ProjectorWatch | None = None,
    *,
    telemetry: bool = False,
) -> FastAPI:
    """The HTTP API over `query` (the /runs endpoints; None: none) and the `projections`
    (under /projections/{name}); `metrics_source` (e.g. `lambda: projector.metrics`) adds
    the projector's lag and counters to /metrics; `watch` (the projector's heartbeat, see
    `behest.read.health`) makes /healthz and /readyz judge the projector, and adds its
    liveness (and lag, without a source) to /metrics; `telemetry` turns on FastAPI's own
    OpenTelemetry spans, metrics and logs (global providers; `BEHEST_OTEL=true`)."""
    readers = ([] if query is None else [query.reader]) + [
        r for r in projections if query is None or r is not query.reader
    ]
    if not readers:
        raise ValueError("nothing to serve: give the run-state query or a projection")
    app = _API(
        title="behest",
        version=_package_version(),
        description="Current, point-in-time and batch states of agent runs, and of every "
        "projection served. The console is at `/`.",
        docs_url=None,  # served by add_console from assets in the package: no CDN
        redoc_url=None,
        # Off unless asked for: /metrics is Prometheus, and FastAPI's OpenTelemetry hooks
        # cost every request provider look-ups (about a tenth of a state read).
        telemetry={
            "tracing": telemetry,
            "metrics": telemetry,
            "logs": telemetry,
            "operation_spans": telemetry,
        },
    )
    metrics = QueryMetrics(readers[0], metrics_source, watch)
    app.front = (metrics, None if telemetry else DirectDispatch(app.router.routes))

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
        add_run_routes(app, query.raw)
    add_projection_routes(app, readers)

    @app.get(
        "/wait",
        response_model=Folded,
        responses={
            **BAD_INPUT,
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

    add_console(app)

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": ErrorBody, "description": "The store cannot be read."}},
        summary="Liveness: the store answers (and whether its projector is alive)",
    )
    def healthz() -> Response:
        fresh = readers[0].freshness()
        health = None if watch is None else watch.check()
        body = {
            "status": "ok" if health is None or health.alive else "degraded",
            "projector": None if health is None else health.to_json_dict(),
            **fresh.to_json_dict(),
        }
        return _json(orjson.dumps(body))

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready: see reason."}},
        summary="Readiness: the projector writing the store is alive and within its lag bound",
    )
    def readyz() -> Response:
        readers[0].freshness()  # the store answers (a StoreError is a 503 too)
        health = None if watch is None else watch.check()
        ready = health is None or health.ready
        body = {
            "status": "ready" if ready else "not_ready",
            "reason": None if health is None else health.reason,
            "projector": None if health is None else health.to_json_dict(),
        }
        return _json(orjson.dumps(body), 200 if ready else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        summary="Prometheus metrics",
    )
    def prometheus() -> Response:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE)

    name_operations(app)
    return app
