"""HTTP reads of any projection served, by name: the generic side of the API.

    GET  /projections                                     the projections served
    GET  /projections/{name}/states/{key}[?as_of=|at_sequence=]  one state (404 if none)
    POST /projections/{name}/states/batch {"keys": [...], "as_of"?}  many in one multi-get
    GET  /projections/{name}/states?prefix=&reverse=&limit=&cursor=  states in key order
    GET  /projections/{name}/index/{prefix}?reverse=&limit=&cursor=  states an index lists

Keys are text: a run id for run-keyed projections, the key's UTF-8 otherwise (or what
the projection's `parse_key`/`format_key` say). Index prefixes are hex, since index keys
are bytes of the projection's own layout. Point in time is for run-keyed projections,
which keep each run's events. States are served as stored (JSON), or through the
projection's `state_json` when it stores another encoding.
"""

from __future__ import annotations

import binascii
import itertools
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final

import orjson
from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from behest.errors import InvalidQueryError, RunNotFoundError
from behest.fold.projection import format_key, index_entity, parse_key
from behest.read.inputs import (
    MAX_BATCH,
    MAX_LIMIT,
    MAX_SEQUENCE,
    bounded,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from behest.read.projection_query import ProjectionQuery
from behest.read.reader import ProjectionReader
from behest.read.routes import DirectRoute, ErrorBody, present
from behest.times import parse_time

__all__ = ["add_projection_routes"]

DEFAULT_STATES_LIMIT: Final = 100


class ProjectionInfo(BaseModel):
    name: str
    run_keyed: bool = Field(description="Keyed by run id, with point-in-time reads.")


class ProjectionList(BaseModel):
    projections: list[ProjectionInfo]


class KeysRequest(BaseModel):
    """States of up to MAX_BATCH keys, now or (run-keyed projections) as of a time."""

    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(max_length=MAX_BATCH, description=f"Keys, at most {MAX_BATCH}.")
    as_of: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None


class KeyedStates(BaseModel):
    states: dict[str, JsonValue] = Field(description="State by key, for the keys found.")
    missing: list[str] = Field(description="Keys without a state (or without one by as_of).")


class KeyedState(BaseModel):
    key: str
    state: JsonValue


class StatePage(BaseModel):
    states: list[KeyedState]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorBody, "description": "Unknown projection or key, or no state by then."},
    "4XX": {"model": ErrorBody, "description": "Bad input (400), oversized body (413)."},
}
_Name = Annotated[str, Path(description="The projection's name (GET /projections lists them).")]
_Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
_Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]
_Reverse = Annotated[bool, Query(description="Descending key order.")]


class _Served:
    """The readers served, by name, each with the step from stored bytes to JSON."""

    def __init__(self, readers: Sequence[ProjectionReader[Any]]) -> None:
        self.queries: dict[str, ProjectionQuery[bytes]] = {}
        for reader in readers:
            finish: Callable[[bytes], bytes] = reader.state_json or _as_is
            self.queries[reader.name] = ProjectionQuery(reader, finish)
        self.listing = orjson.dumps(
            {
                "projections": [
                    {"name": q.reader.name, "run_keyed": q.reader.projection.run_keyed}
                    for q in self.queries.values()
                ]
            }
        )

    def __call__(self, name: str) -> ProjectionQuery[bytes]:
        query = self.queries.get(name)
        if query is None:
            known = ", ".join(sorted(self.queries))
            raise RunNotFoundError(f"no projection {name!r} is served here; served: {known}")
        return query


def _as_is(data: bytes) -> bytes:
    return data


def _bounds(position: bytes | None, reverse: bool) -> dict[str, bytes | None]:
    """Where a page continues: after the cursor's key, or before it when descending."""
    return {"after": None, "before": position} if reverse else {"after": position, "before": None}


def _page(found: list[tuple[str, bytes]], last: bytes | None) -> bytes:
    states = b",".join(b'{"key":' + orjson.dumps(k) + b',"state":' + v + b"}" for k, v in found)
    cursor = orjson.dumps(None if last is None else encode_cursor(last))
    return b'{"states":[' + states + b'],"next_cursor":' + cursor + b"}"


def add_projection_routes(app: FastAPI, readers: Sequence[ProjectionReader[Any]]) -> None:
    """The /projections endpoints over `readers`, each a `DirectRoute`."""
    served = _Served(readers)

    def list_projections() -> bytes:
        return served.listing

    def get_state(
        name: _Name,
        key: Annotated[str, Path(description="The entity key (a run id, a tool name, ...).")],
        as_of: Annotated[
            str | None, Query(description="RFC 3339 time (run-keyed projections).")
        ] = None,
        at_sequence: Annotated[int | None, Query(ge=0, le=MAX_SEQUENCE)] = None,
    ) -> bytes:
        query = served(name)
        moment = None if as_of is None else parse_time(as_of)
        entity = parse_key(query.reader.projection, key)
        found = query.find_at(entity, as_of=moment, at_sequence=at_sequence)
        return present(found, f"{name} key {key!r}", as_of, at_sequence)

    def get_states(name: _Name, request: KeysRequest) -> bytes:
        query = served(name)
        projection = query.reader.projection
        texts = list(dict.fromkeys(bounded(request.keys, "keys")))
        keys = [parse_key(projection, t) for t in texts]
        moment = None if request.as_of is None else parse_time(request.as_of)
        found = query.get_many(keys, as_of=moment)
        states = b",".join(
            orjson.dumps(t) + b":" + v
            for t, k in zip(texts, keys, strict=True)
            if (v := found[k]) is not None
        )
        missing = [t for t, k in zip(texts, keys, strict=True) if found[k] is None]
        return b'{"states":{' + states + b'},"missing":' + orjson.dumps(missing) + b"}"

    def scan_states(
        name: _Name,
        prefix: Annotated[str, Query(description="Only keys that start with this text.")] = "",
        reverse: _Reverse = False,
        limit: _Limit = DEFAULT_STATES_LIMIT,
        cursor: _Cursor = None,
    ) -> bytes:
        query = served(name)
        projection = query.reader.projection
        if prefix and projection.run_keyed:
            raise InvalidQueryError(
                f"{name} is keyed by run id (16 bytes), so a text prefix selects nothing: "
                "leave prefix out, or list runs through its index"
            )
        position = None if cursor is None else decode_cursor(cursor)
        scan = query.scan(prefix.encode(), reverse=reverse, **_bounds(position, reverse))
        rows = list(itertools.islice(scan, check_limit(limit) + 1))
        last = rows[limit - 1][0] if len(rows) > limit else None
        return _page([(format_key(projection, k), v) for k, v in rows[:limit]], last)

    def scan_index(
        name: _Name,
        prefix: Annotated[str, Path(description="The index prefix, as hex bytes.")],
        reverse: _Reverse = False,
        limit: _Limit = DEFAULT_STATES_LIMIT,
        cursor: _Cursor = None,
    ) -> bytes:
        query = served(name)
        projection = query.reader.projection
        try:
            start = bytes.fromhex(prefix)
        except (ValueError, binascii.Error):
            raise InvalidQueryError(
                f"index prefix {prefix!r} is not hex: give the index key's bytes as hex, "
                "e.g. 61 for b'a'"
            ) from None
        position = None if cursor is None else decode_cursor(cursor)
        bounds = _bounds(position, reverse)
        found, last = query.index(start, limit=check_limit(limit), reverse=reverse, **bounds)
        entity = index_entity(projection)
        listed = [(format_key(projection, entity(k)), v) for k, v in found]
        return _page(listed, last)

    routes: list[tuple[str, Any, str, Any, str]] = [
        ("/projections", list_projections, "GET", ProjectionList, "The projections served"),
        (
            "/projections/{name}/states/batch",
            get_states,
            "POST",
            KeyedStates,
            "States of many keys of a projection",
        ),
        (
            "/projections/{name}/states/{key:path}",
            get_state,
            "GET",
            JsonValue,
            "A projection's state by key: current, as of a time, or at a sequence",
        ),
        (
            "/projections/{name}/states",
            scan_states,
            "GET",
            StatePage,
            "A projection's states in key order",
        ),
        (
            "/projections/{name}/index/{prefix}",
            scan_index,
            "GET",
            StatePage,
            "The states a projection's index lists under a prefix",
        ),
    ]
    for path, endpoint, method, model, summary in routes:
        route = DirectRoute(
            path,
            endpoint,
            methods=[method],
            response_model=model,
            responses=_ERRORS,
            summary=summary,
            inline=endpoint in (list_projections, get_state),  # one state; others pages
        )
        app.router.routes.append(route)
