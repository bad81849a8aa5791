"""Scatter-gather's pure parts: one cursor for every node, exact merged pages, batch parsing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from behest.cluster.pages import cursor_after, merge_pages, parse_batch, run_of_path
from behest.emit.partitioner import partition_for
from behest.projections.run_state import RunStateProjection
from behest.read.query import RunStateQuery
from behest.testing import ProjectionDriver, sample_run


def test_the_cursor_of_a_merged_page_is_the_one_the_query_issues(tmp_path: Path) -> None:
    start = datetime(2026, 11, 20, 14, 3, 7, tzinfo=UTC)
    runs = [sample_run(events=5, seed=n, start=start + timedelta(seconds=n % 3)) for n in range(9)]
    with ProjectionDriver(RunStateProjection(), tmp_path) as driver:
        driver.feed([event for run in runs for event in run])
        query = RunStateQuery(driver.store)
        cursor = None
        for _ in range(4):
            states, cursor = query.raw.list_runs(limit=2, cursor=cursor)
            assert cursor == cursor_after(orjson.loads(states[-1]))


def _state(created: int, run: uuid.UUID) -> dict[str, Any]:
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=created)
    return {"run_id": str(run), "created_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def _key(state: dict[str, Any]) -> tuple[str, str]:
    return state["created_at"], state["run_id"]


@settings(max_examples=60, deadline=None)
@given(
    created=st.lists(st.integers(0, 50), min_size=0, max_size=40),
    nodes=st.integers(1, 4),
    limit=st.integers(1, 7),
    data=st.data(),
)
def test_merged_pages_list_every_run_once_newest_first(
    created: list[int], nodes: int, limit: int, data: st.DataObject
) -> None:
    ids = data.draw(st.lists(st.uuids(), min_size=len(created), max_size=len(created), unique=True))
    runs = [_state(c, run) for c, run in zip(created, ids, strict=True)]
    owner = {r["run_id"]: partition_for(r["run_id"], 6) % nodes for r in runs}
    everything = sorted(runs, key=_key, reverse=True)
    listed: list[dict[str, Any]] = []
    after: tuple[str, str] | None = None
    for _ in range(len(runs) + 2):
        pages = []
        for node in range(nodes):  # what each node answers: its newest `limit` after the cursor
            own = [
                r
                for r in everything
                if owner[r["run_id"]] == node and (after is None or _key(r) < after)
            ]
            pages.append({"runs": own[:limit], "next_cursor": "more" if own[limit:] else None})
        page = merge_pages(pages, limit)
        listed += page["runs"]
        if page["next_cursor"] is None:
            break
        assert page["next_cursor"] == cursor_after(page["runs"][-1])
        after = _key(page["runs"][-1])
    assert listed == everything


def test_batches_parse_to_canonical_ids_once_each() -> None:
    run = uuid.uuid4()
    body = orjson.dumps({"run_ids": [str(run).upper(), str(run)], "as_of": "2026-01-01T00:00:00Z"})
    assert parse_batch(body) == ([str(run)], "2026-01-01T00:00:00Z")
    for bad in (b"{", b"[]", b'{"run_ids": "x"}', b'{"run_ids": ["nope"]}', b'{"ids": []}'):
        assert parse_batch(bad) is None  # the API itself says what is wrong with these
    assert parse_batch(orjson.dumps({"run_ids": [str(run)] * 1001})) is None


def test_only_single_run_paths_name_a_run() -> None:
    run = str(uuid.uuid4())
    assert run_of_path("GET", f"/runs/{run}") == run
    assert run_of_path("GET", f"/runs/{run}/events") == run
    assert run_of_path("GET", f"/runs/{run}/watch") == run
    for method, path in [
        ("POST", f"/runs/{run}"),
        ("GET", "/runs/batch"),
        ("GET", "/runs/watch"),
        ("GET", "/runs/"),
        ("GET", f"/runs/{run}/other"),
        ("GET", f"/runs/{run}/events/x"),
    ]:
        assert run_of_path(method, path) is None
