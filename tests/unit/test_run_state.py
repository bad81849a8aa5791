"""RunState folding: the projection against an independent reading of the seed's rules.

The reference below folds pydantic `AgentEvent`s straight from shared/seeds/state.rs.txt;
the projection folds decoded wire records through the real projector code path (the
testing driver and RocksDB). They must agree on every run, in the contract's JSON shape.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behest.codec import decode_record, encode
from behest.events import (
    AgentEvent,
    KnownFinishReason,
    ModelStarted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunId,
    RunStarted,
    RunState,
    TextDelta,
    TokenUsage,
    UnknownFinishReason,
    UsageRecorded,
)
from behest.fold.projection import fold
from behest.projections import run_state
from behest.projections.run_state import (
    INDEX_ACTIVE,
    INDEX_ALL,
    INDEX_SESSION,
    INDEX_STATUS,
    STATUS_CODES,
    RunStateProjection,
    index_run_id,
)
from behest.testing import ProjectionDriver, run_projection
from behest.times import format_micros, parse_micros
from tests.unit.strategies import agent_events, run_histories, sample_events

PROJECTION = RunStateProjection()


def _time(moment: datetime) -> str:
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:"
        f"{m.second:02d}.{m.microsecond:06d}Z"
    )


def reference(events: list[AgentEvent]) -> dict[str, Any] | None:
    """The seed's `RunState::apply`, read rule by rule, over pydantic events."""
    state: dict[str, Any] | None = None
    for event in events:
        if state is None:
            state = {
                "run_id": str(event.run_id),
                "session_id": None,
                "status": "pending",
                "provider": None,
                "model": None,
                "metadata": None,
                "iteration": 0,
                "total_usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
                "last_finish": None,
                "last_error": None,
                "event_count": 0,
                "created_at": _time(event.timestamp),
            }
        payload = event.payload
        if isinstance(payload, RunStarted):
            state.update(
                status="session_loaded",
                provider=payload.provider,
                model=payload.model,
                session_id=str(payload.session_id),
                metadata=payload.metadata,
            )
        elif isinstance(payload, ModelStarted):
            state.update(iteration=payload.iteration, status="calling_model")
        elif isinstance(payload, UsageRecorded):
            usage = state["total_usage"]
            i = usage["input_tokens"] + payload.usage.input_tokens
            o = usage["output_tokens"] + payload.usage.output_tokens
            state["total_usage"] = {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}
        elif isinstance(payload, RunCompleted):
            reason = payload.finish_reason
            state["status"] = "completed"
            state["last_finish"] = (
                reason.value
                if isinstance(reason, KnownFinishReason)
                else {"unknown": reason.unknown}
            )
        elif isinstance(payload, RunFailed):
            state.update(status="failed", last_error=payload.error)
        elif isinstance(payload, RunCancelled):
            state["status"] = "cancelled"
        state["updated_at"] = _time(event.timestamp)
        state["event_count"] += 1
        state["sequence"] = event.sequence
    return state


def stored_json(driver: ProjectionDriver[Any], run_id: uuid.UUID) -> dict[str, Any] | None:
    data = driver.store.get_state(run_id.bytes)
    return None if data is None else dict(orjson.loads(data))


DRIVER_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@DRIVER_SETTINGS
@given(history=run_histories(max_events=25))
def test_a_run_folds_as_the_seed_says(tmp_path: Path, history: list[AgentEvent]) -> None:
    directory = tmp_path / uuid.uuid4().hex
    with ProjectionDriver(PROJECTION, directory) as driver:
        driver.feed(history)
        stored = stored_json(driver, history[0].run_id)
    assert stored == reference(history)
    assert stored is not None
    # The stored bytes are the contract's RunState, as the query layer serves them.
    assert RunState.model_validate(stored) == RunState.model_validate(reference(history))


@DRIVER_SETTINGS
@given(
    run_id=st.uuids(),
    payload_events=st.lists(agent_events(sequence=0), min_size=1, max_size=15),
)
def test_any_variants_in_any_order_fold_as_the_seed_says(
    tmp_path: Path, run_id: uuid.UUID, payload_events: list[AgentEvent]
) -> None:
    """Runs that do not start with RunStarted, repeat terminals, or go back in time."""
    history = [
        e.model_copy(update={"run_id": RunId(run_id), "sequence": n})
        for n, e in enumerate(payload_events)
    ]
    with ProjectionDriver(PROJECTION, tmp_path / uuid.uuid4().hex) as driver:
        driver.feed(history)
        assert stored_json(driver, run_id) == reference(history)


def test_the_seeds_own_example_rebuilds_a_completed_run() -> None:
    run_id = RunId(uuid.uuid4())
    start = datetime(2026, 11, 20, 14, 3, 7, 123456, tzinfo=UTC)
    session = uuid.uuid4()
    payloads = [
        RunStarted(session_id=session, provider="test-provider", model="test-model"),
        ModelStarted(provider="test-provider", model="test-model", iteration=1),
        UsageRecorded(usage={"input_tokens": 100, "output_tokens": 50, "total_tokens": 150}),
        RunCompleted(finish_reason=KnownFinishReason.STOP, iterations=1),
    ]
    events = [
        AgentEvent(run_id=run_id, sequence=n, timestamp=start + timedelta(seconds=n), payload=p)
        for n, p in enumerate(payloads)
    ]
    state = run_projection(PROJECTION, events)[run_id.bytes]
    assert state["status"] == "completed"
    assert state["session_id"] == str(session)
    assert (state["provider"], state["model"]) == ("test-provider", "test-model")
    assert state["iteration"] == 1
    assert state["total_usage"] == {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150}
    assert state["last_finish"] == "stop"
    assert state["last_error"] is None
    assert state["event_count"] == 4
    assert state["sequence"] == 3
    assert format_micros(state["created_at"]) == "2026-11-20T14:03:07.123456Z"
    assert format_micros(state["updated_at"]) == "2026-11-20T14:03:10.123456Z"


def test_failed_and_unknown_finish_reasons() -> None:
    run_id = RunId(uuid.uuid4())
    failed = [
        AgentEvent(run_id=run_id, sequence=0, payload=TextDelta(delta="x")),
        AgentEvent(run_id=run_id, sequence=1, payload=RunFailed(error="something broke")),
    ]
    state = fold(PROJECTION, [decode_record(encode(e)) for e in failed])
    assert state is not None
    assert (state["status"], state["last_error"], state["last_finish"]) == (
        "failed",
        "something broke",
        None,
    )
    # no RunStarted: session, provider and model unknown (null), still pending-born
    assert (state["session_id"], state["provider"], state["model"]) == (None, None, None)
    reason = UnknownFinishReason(unknown="max_turns")
    done = AgentEvent(
        run_id=run_id, sequence=2, payload=RunCompleted(finish_reason=reason, iterations=3)
    )
    state = PROJECTION.apply(state, decode_record(encode(done)))
    assert state["last_finish"] == {"unknown": "max_turns"}


def test_apply_leaves_its_input_state_alone() -> None:
    records = [decode_record(encode(e)) for e in sample_events()]
    state = fold(PROJECTION, records[:1])
    assert state is not None
    before = orjson.dumps(state)
    PROJECTION.apply(state, records[12])  # UsageRecorded
    assert orjson.dumps(state) == before


def test_other_namespaces_move_only_the_counters() -> None:
    records = [decode_record(encode(e)) for e in sample_events()]
    state = fold(PROJECTION, records)
    assert state is not None
    for name in ("elsewhere.RunFailed", "RunFailed"):  # not behest's: no namespace stripping
        other = {**records[1], "payload": (name, {"error": "not ours"})}
        moved = PROJECTION.apply(state, other)  # type: ignore[arg-type]
        assert moved == {
            **state,
            "event_count": state["event_count"] + 1,
            "sequence": records[1]["sequence"],
            "updated_at": records[1]["timestamp"],
        }


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T14:03:07.000000Z",
        "1969-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.999999Z",
    ],
)
def test_times_round_trip_with_four_digit_years(text: str) -> None:
    assert format_micros(parse_micros(text)) == text


def test_state_bytes_round_trip() -> None:
    records = [decode_record(encode(e)) for e in sample_events()]
    state = fold(PROJECTION, records)
    assert state is not None
    assert PROJECTION.decode_state(PROJECTION.encode_state(state)) == state


def test_index_keys_list_a_run_by_session_status_and_activity_in_time_order() -> None:
    events = sample_events()
    started = fold(PROJECTION, [decode_record(encode(events[0]))])
    assert started is not None
    keys = set(PROJECTION.index_keys(started))
    session = uuid.UUID(started["session_id"]).bytes
    run = uuid.UUID(started["run_id"]).bytes
    assert {k[:1] for k in keys} == {INDEX_ALL, INDEX_SESSION, INDEX_STATUS, INDEX_ACTIVE}
    assert any(k.startswith(INDEX_SESSION + session) for k in keys)
    assert any(k.startswith(INDEX_STATUS + STATUS_CODES["session_loaded"]) for k in keys)
    assert all(index_run_id(k) == uuid.UUID(bytes=run) for k in keys)
    finished = {**started, "status": "completed"}
    assert not any(k.startswith(INDEX_ACTIVE) for k in PROJECTION.index_keys(finished))
    # Earlier creation sorts first, before 1970 too.
    times = [-(10**12), -1, 0, 1, 10**15]
    ordered = [next(iter(PROJECTION.index_keys({**started, "created_at": t}))) for t in times]
    assert ordered == sorted(ordered)


def test_the_folding_state_is_the_run_state_model_field_for_field() -> None:
    state = fold(PROJECTION, [decode_record(encode(e)) for e in sample_events()])
    assert state is not None
    assert list(state) == list(RunState.model_fields)
    assert list(state["total_usage"]) == list(TokenUsage.model_fields)
    stored = PROJECTION.encode_state(state)
    assert RunState.model_validate_json(stored).to_json_dict() == orjson.loads(stored)


def test_a_folding_form_that_drifts_from_the_model_fails_on_import() -> None:
    class Missing(TypedDict):
        input_tokens: int
        total_tokens: int

    with pytest.raises(TypeError, match=r"Missing must have TokenUsage's fields in its order"):
        run_state._same_fields(Missing, TokenUsage)
    run_state._same_fields(run_state._Usage, TokenUsage)  # the real one agrees


@given(history=run_histories(max_events=25), cut=st.integers(0, 25))
def test_apply_many_is_apply_event_by_event(history: list[AgentEvent], cut: int) -> None:
    """The fast path's fold of many events on one copy: the same state as `apply` one by
    one, and the state it started from left as it was."""
    records = [decode_record(encode(e)) for e in history]
    start = fold(PROJECTION, records[:cut])
    before = orjson.dumps(start)
    assert run_state.apply_many(start, iter(records[cut:])) == fold(
        PROJECTION, records[cut:], start
    )
    assert orjson.dumps(start) == before
    assert run_state.apply_many(None, []) is None
