"""Direct routes: endpoints FastAPI documents but whose requests skip its machinery.

FastAPI builds /openapi.json from an endpoint's signature, which is worth having; but its
per-request parameter machinery (dependency solving, response validation) costs a state
read ten times over. A `DirectRoute` keeps the first and drops the second: the endpoint
is a plain function of its path and query parameters (and, for a POST, one pydantic body
model) that returns the JSON body of a 200 or raises; the route converts the parameters
from the request itself and maps every error through one function, `error_answer`. So
each endpoint has one implementation and one error mapping, whether reached through the
router or directly from the middleware (`DirectDispatch`), and is a plain function that
routing (e.g. across nodes) can wrap.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, cast
from urllib.parse import parse_qsl

import orjson
from fastapi import Query
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, JsonValue, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from behest.errors import QueryError, RunNotFoundError, StoreError
from behest.events import RunStatus
from behest.read.reader import Absent

__all__ = [
    "BAD_INPUT",
    "DirectDispatch",
    "DirectRoute",
    "ErrorBody",
    "error_answer",
    "error_body",
    "present",
    "send_json",
    "validation_body",
]

log = logging.getLogger("behest.read.http")

_JSON_HEADERS: Final = (b"content-type", b"application/json")


class ErrorBody(BaseModel):
    """Every non-2xx answer."""

    error: str = Field(description="What is wrong, and what to do about it.")
    detail: JsonValue = Field(
        default=None, description="Structured detail, e.g. one entry per invalid field."
    )


BAD_INPUT: Final[dict[int | str, dict[str, Any]]] = {
    "4XX": {"model": ErrorBody, "description": "Bad input (400), oversized body (413)."},
}
"""OpenAPI `responses` of an endpoint whose only failures are bad input."""


def present(found: bytes | Absent, what: str, as_of: str | None, at_sequence: int | None) -> bytes:
    """The state a point-in-time read found, or the 404 that says why there is none:
    `what` (e.g. "run <id>") is unknown, or had no event by the point asked."""
    if found is Absent.UNKNOWN:
        raise RunNotFoundError(f"{what} is unknown")
    if found is Absent.NOT_YET:
        point = f"as of {as_of}" if as_of is not None else f"at sequence {at_sequence}"
        raise RunNotFoundError(f"{what} had no event {point}")
    return found


def error_body(error: str, detail: Any = None) -> bytes:
    """The one shape of every non-2xx answer."""
    return orjson.dumps({"error": error, "detail": detail})


def error_answer(error: Exception, where: str = "") -> tuple[int, bytes]:
    """Status and body for an error raised while answering `where` (method and path)."""
    if isinstance(error, RunNotFoundError):
        return 404, error_body(str(error))
    if isinstance(error, QueryError):
        return 400, error_body(str(error))
    if isinstance(error, _BadRequest):
        return 400, validation_body(error.problems)
    if isinstance(error, ValidationError):
        return 400, _validation_body(error)
    if isinstance(error, StoreError):
        log.error("state store failed: %s", error)
        return 503, error_body(f"the state store is unavailable: {error}")
    log.error("unhandled error answering %s", where, exc_info=error)
    return 500, error_body("internal error: the server log has the details")


def _where(loc: Sequence[int | str]) -> str:
    kind = {"query": "query parameter", "path": "path parameter", "body": "body field"}
    if not loc:
        return "request"
    if loc[0] == "body" and len(loc) == 1:
        return "request body"
    place = kind.get(str(loc[0]), str(loc[0]))
    return f"{place} {'.'.join(str(part) for part in loc[1:])!r}"


def validation_body(problems: list[dict[str, Any]]) -> bytes:
    """A 400's body for request validation problems (`loc`, `msg`, `type` each)."""
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        message = 'the request body is not valid JSON: send e.g. {"run_ids": ["<uuid>"]}'
    else:
        message = f"{_where(first['loc'])}: {first['msg']}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem(s), see detail)"
    return error_body(message, problems)


def _validation_body(error: ValidationError) -> bytes:
    problems = [
        {"loc": ["body", *e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in error.errors()
    ]
    return validation_body(problems)


async def send_json(send: Send, status: int, body: bytes) -> None:
    """A JSON answer, as two ASGI messages (no `Response` object)."""
    headers = [(b"content-length", b"%d" % len(body)), _JSON_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DirectRoute(APIRoute):
    """An `APIRoute` (documented in OpenAPI as usual) answered without FastAPI's
    parameter machinery; see the module docstring."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, inline: bool = True, **kwargs: Any
    ) -> None:
        """`inline`: answer on the event loop (a read of microseconds); False for reads that
        may take milliseconds (batches, pages), which run on a worker thread instead so
        they never hold up the single-state reads beside them."""
        super().__init__(path, endpoint, **kwargs)
        self.inline = inline
        self._query = {field.alias: field for field in self.dependant.query_params}
        body = self.body_field
        self._body: tuple[str, type[BaseModel]] | None = None
        if body is not None:
            self._body = (body.name, cast(type[BaseModel], body.field_info.annotation))
        self.app = self._app

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send, dict(scope.get("path_params") or {}))

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, params: dict[str, Any]
    ) -> int:
        """Answer the request, given its path parameters (which this fills in with the
        rest: a new dict each request); returns the status sent."""
        try:
            if scope["query_string"]:
                params.update(self._query_params(scope["query_string"]))
            if self._body is not None:
                name, model = self._body
                params[name] = model.model_validate_json(await _read_body(receive))
            if self.inline:
                status, body = 200, self.endpoint(**params)
            else:
                status, body = 200, await run_in_threadpool(self.endpoint, **params)
        except Exception as error:  # every error maps to an answer; bugs are logged there
            status, body = error_answer(error, f"{scope['method']} {scope['path']}")
        await send_json(send, status, body)
        return status

    def _query_params(self, query_string: bytes) -> dict[str, Any]:
        """The declared query parameters present, validated as FastAPI would (same types,
        bounds and messages); unknown ones are ignored, the last of repeated ones counts."""
        given = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        params: dict[str, Any] = {}
        problems: list[dict[str, Any]] = []
        for name, text in given.items():
            field = self._query.get(name)
            if field is None:
                continue
            value, errors = field.validate(text, loc=("query", name))
            if errors:
                problems.extend(
                    {"loc": list(e["loc"]), "msg": str(e["msg"]), "type": e["type"]} for e in errors
                )
            else:
                params[name] = value
        if problems:
            raise _BadRequest(problems)
        return params


class _BadRequest(Exception):
    """Request input that failed validation: a 400 listing each problem."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(problems)
        self.problems = problems


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _first_direct(routes: Sequence[Any], scope: Scope) -> DirectRoute | None:
    """The route the router would pick for `scope` if it is a `DirectRoute`, else None."""
    path = scope["path"]
    plain = not scope.get("root_path")
    for route in routes:
        pattern = getattr(route, "path_regex", None)
        if plain and pattern is not None and pattern.match(path) is None:
            continue  # a tenth of the cost of a full `matches`
        match, _ = route.matches(dict(scope))
        if match is Match.FULL:
            return route if isinstance(route, DirectRoute) else None
    return None


_UUID_SEGMENT: Final = re.compile(
    r"/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?=/|$)"
)
_DECISIONS: Final = 4096


class DirectDispatch:
    """Which `DirectRoute` answers a request, decided as the router decides (the first full
    match in router order) once per method and path shape, then remembered: no route tells
    one UUID in a path from another, so `/runs/<any id>` is one decision. Finding the first
    full match costs more than a state read once routers are included (FastAPI matches an
    included router route by route), so it is done once, not per request; per request, only
    the decided route's own pattern runs, for the path parameters."""

    def __init__(self, routes: Sequence[Any]) -> None:
        self.routes = routes
        self._decided: dict[tuple[str, str], DirectRoute | None] = {}

    def __call__(self, scope: Scope) -> tuple[DirectRoute, dict[str, Any]] | None:
        """The route and the request's path parameters, or None: not a direct one."""
        path = scope["path"]
        if scope.get("root_path"):  # mounted below a prefix: decide afresh (rare)
            route = _first_direct(self.routes, scope)
            if route is None:
                return None
            _, child = route.matches(scope)
            return route, dict(child.get("path_params", {}))
        key = (scope["method"], _UUID_SEGMENT.sub("/~", path))
        try:
            route = self._decided[key]
        except KeyError:
            route = _first_direct(self.routes, scope)
            if len(self._decided) >= _DECISIONS:  # paths of free-text keys: stay bounded
                self._decided.clear()
            self._decided[key] = route
        if route is None:
            return None
        match = route.path_regex.match(path)
        if match is None:  # cannot be, since the same shape matched: let the router answer
            return None
        convert = route.param_convertors
        params = {name: convert[name].convert(value) for name, value in match.groupdict().items()}
        return route, params


SessionFilter = Annotated[
    str | None,
    Query(description="Only this session's runs.", json_schema_extra={"format": "uuid"}),
]
StatusFilter = Annotated[RunStatus | None, Query(description="Only runs in this status.")]
ActiveFilter = Annotated[
    bool | None,
    Query(description="true: only runs not yet finished; false: only finished runs."),
]
"""The run filters of `GET /runs` and `GET /runs/watch`."""
