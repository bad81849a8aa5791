"""Tool usage: a projection keyed by tool name, across runs."""

from __future__ import annotations

import uuid
from pathlib import Path

from behest.codec import decode_record, encode
from behest.events import (
    AgentEvent,
    RunId,
    TextDelta,
    ToolExecutionFailure,
    ToolExecutionFinished,
    ToolExecutionSuccess,
)
from behest.fold.projection import fold_by_key
from behest.fold.sequences import RunHead
from behest.projections import ToolUsageProjection
from behest.testing import ProjectionDriver, run_projection, sample_run

PROJECTION = ToolUsageProjection()


def finished(run: uuid.UUID, sequence: int, tool: str, ms: int, *, ok: bool) -> AgentEvent:
    result = ToolExecutionSuccess(output={"ok": 1}) if ok else ToolExecutionFailure(error="boom")
    payload = ToolExecutionFinished(
        call_id=f"c{sequence}", tool_name=tool, result=result, duration_ms=ms
    )
    return AgentEvent(run_id=RunId(run), sequence=sequence, payload=payload)


def test_counts_failures_and_durations_per_tool() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    events = [
        finished(a, 0, "search", 10, ok=True),
        AgentEvent(run_id=RunId(a), sequence=1, payload=TextDelta(delta="x")),
        finished(a, 2, "search", 30, ok=False),
        finished(b, 0, "search", 5, ok=True),
        finished(b, 1, "fetch", 700, ok=False),
    ]
    states = run_projection(PROJECTION, events)
    assert states == {
        b"search": {
            "tool": "search",
            "calls": 3,
            "failures": 1,
            "total_duration_ms": 45,
            "max_duration_ms": 30,
        },
        b"fetch": {
            "tool": "fetch",
            "calls": 1,
            "failures": 1,
            "total_duration_ms": 700,
            "max_duration_ms": 700,
        },
    }


def test_only_finished_executions_have_a_key() -> None:
    run = sample_run(seed=1, events=60)
    keyed = [e for e in run if PROJECTION.key(decode_record(encode(e))) is not None]
    assert keyed
    assert all(isinstance(e.payload, ToolExecutionFinished) for e in keyed)


def test_stores_only_states_and_heads_not_runs(tmp_path: Path) -> None:
    runs = [sample_run(seed=n, events=40) for n in range(5)]
    events = [e for run in runs for e in run]
    with ProjectionDriver(PROJECTION, tmp_path) as driver:
        driver.feed(events, batch_size=13)
        assert driver.states() == fold_by_key(
            PROJECTION, [decode_record(encode(e)) for e in events]
        )
        store = driver.partition_store()
        assert not list(store.events.keys())
        assert not list(store.snapshots.keys())
        assert not list(store.index.keys())
        assert [store.get_head(run[0].run_id.bytes) for run in runs] == [
            RunHead(len(run) - 1) for run in runs
        ]


def test_state_bytes_round_trip() -> None:
    state = PROJECTION.apply(
        None, decode_record(encode(finished(uuid.uuid4(), 0, "t", 3, ok=True)))
    )
    assert PROJECTION.decode_state(PROJECTION.encode_state(state)) == state
    assert list(PROJECTION.index_keys(state)) == []
