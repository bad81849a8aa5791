"""The pure parts of scatter-gather: which run a path names, a batch's ids, one merged page.

A listing's cursor is global: it names a position in the order every node lists in
(creation time, then run id, newest first), so each node resumes from it alone and the
merge of the nodes' pages is a plain k-way merge.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from behest.read.inputs import encode_cursor
from behest.times import parse_micros

__all__ = ["cursor_after", "merge_pages", "parse_batch", "run_of_path", "to_int"]

MAX_BATCH: Final = 1000
_TIME_BIAS: Final = 1 << 63
_U64: Final = struct.Struct(">Q")


def cursor_after(state: Mapping[str, Any]) -> str:
    """The listing cursor that resumes right after `state` (the contract's JSON of a run):
    the same bytes `RunStateQuery.list_runs` issues, so one cursor is good on every node."""
    created = parse_micros(state["created_at"])
    return encode_cursor(_U64.pack(created + _TIME_BIAS) + uuid.UUID(state["run_id"]).bytes)


def _sort_key(state: Mapping[str, Any]) -> tuple[str, str]:
    # RFC 3339 UTC with microseconds sorts as text; the run id breaks ties as its bytes do.
    return state["created_at"], state["run_id"]


def merge_pages(pages: Sequence[Mapping[str, Any]], limit: int) -> dict[str, Any]:
    """One page of `limit` runs, newest first, from the nodes' pages of the same request.

    Each node's page holds its `limit` newest runs after the cursor (or all it has, with
    no `next_cursor`), so no run missing from the pages can be newer than the `limit`-th
    run of the merge: the merged page is exact, and its cursor resumes after its last run.
    """
    merged = sorted(
        (state for page in pages for state in page["runs"]), key=_sort_key, reverse=True
    )
    more = len(merged) > limit or any(page["next_cursor"] for page in pages)
    runs = merged[:limit]
    return {"runs": runs, "next_cursor": cursor_after(runs[-1]) if more and runs else None}


def run_of_path(method: str, path: str) -> str | None:
    """The run id of `GET /runs/{id}`, `/runs/{id}/events` or `/runs/{id}/watch`."""
    if method != "GET" or not path.startswith("/runs/"):
        return None
    parts = path[len("/runs/") :].split("/")
    if parts[0] in ("batch", "watch", "") or len(parts) > 2:
        return None
    if len(parts) == 2 and parts[1] not in ("events", "watch"):
        return None
    return parts[0]


def parse_batch(body: bytes) -> tuple[list[str], str | None] | None:
    """Canonical run ids (in order, once each) and as_of of a well-formed batch, else None."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict) or set(request) - {"run_ids", "as_of"}:
        return None
    run_ids, as_of = request.get("run_ids"), request.get("as_of")
    if not isinstance(run_ids, list) or len(run_ids) > MAX_BATCH:
        return None
    if as_of is not None and not isinstance(as_of, str):
        return None
    try:
        ids = [str(uuid.UUID(r)) for r in run_ids if isinstance(r, str)]
    except ValueError:
        return None
    if len(ids) != len(run_ids):
        return None
    return list(dict.fromkeys(ids)), as_of


def to_int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
