"""The event model: pydantic JSON round trips, UTC timestamps, and the strategies
every other test draws from."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from behest.events import (
    PAYLOAD_TYPES,
    TERMINAL_TYPES,
    AgentEvent,
    RunId,
    RunStarted,
    RunState,
    TextDelta,
    format_time,
)
from tests.unit import strategies

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""No timing health checks: a shared, loaded machine must not fail a correct property."""

RUN = RunId(uuid.UUID("3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00"))


@settings(RELAXED, max_examples=150)
@given(strategies.events())
def test_agent_event_round_trips_through_pydantic_json(event: AgentEvent) -> None:
    assert AgentEvent.model_validate_json(event.model_dump_json()) == event


@settings(RELAXED, max_examples=100)
@given(strategies.run_states())
def test_run_state_round_trips_through_pydantic_json(state: RunState) -> None:
    assert RunState.model_validate_json(state.model_dump_json()) == state


def test_payload_strategies_cover_every_variant_in_union_order() -> None:
    assert tuple(strategies.PAYLOADS) == PAYLOAD_TYPES
    samples = [type(event.payload) for event in strategies.sample_events()]
    assert list(dict.fromkeys(samples)) == list(PAYLOAD_TYPES)


@settings(RELAXED, max_examples=50)
@given(strategies.events())
def test_event_timestamps_are_utc_and_within_the_wire_range(event: AgentEvent) -> None:
    assert event.timestamp.utcoffset() == timedelta(0)
    micros = (event.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert -(2**63) <= micros < 2**63


@settings(RELAXED, max_examples=30)
@given(strategies.run_histories(RUN))
def test_run_histories_look_like_one_run(history: list[AgentEvent]) -> None:
    assert {event.run_id for event in history} == {RUN}
    assert [event.sequence for event in history] == list(range(len(history)))
    assert isinstance(history[0].payload, RunStarted)
    times = [event.timestamp for event in history]
    assert times == sorted(times)
    assert not any(event.is_terminal for event in history[:-1])


@given(st.data())
@settings(RELAXED, max_examples=10)
def test_agent_events_can_fix_run_and_sequence(data: st.DataObject) -> None:
    event = data.draw(strategies.agent_events(RUN, sequence=7))
    assert (event.run_id, event.sequence) == (RUN, 7)


def test_timestamp_must_be_timezone_aware() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        naive = datetime(2026, 1, 1)  # noqa: DTZ001
        AgentEvent(run_id=RUN, sequence=0, timestamp=naive, payload=TextDelta(delta=""))


def test_timestamp_in_another_zone_is_stored_as_the_same_instant_in_utc() -> None:
    local = datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    event = AgentEvent(run_id=RUN, sequence=0, timestamp=local, payload=TextDelta(delta=""))
    assert event.timestamp == local
    assert event.timestamp.tzinfo is UTC
    assert event.timestamp.hour == 10


def test_negative_sequence_is_rejected() -> None:
    with pytest.raises(ValidationError, match="sequence"):
        AgentEvent(run_id=RUN, sequence=-1, payload=TextDelta(delta=""))


def test_payload_is_chosen_by_its_type_tag() -> None:
    event = AgentEvent.model_validate(
        {"run_id": str(RUN), "sequence": 0, "payload": {"type": "RunFailed", "error": "x"}}
    )
    assert event.type == "RunFailed"
    assert event.is_terminal
    assert {cls.__name__ for cls in PAYLOAD_TYPES} >= TERMINAL_TYPES


@settings(RELAXED, max_examples=100)
@given(strategies.utc_datetimes())
def test_format_time_is_rfc3339_utc_with_microseconds_for_every_year(moment: datetime) -> None:
    text = format_time(moment)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    assert datetime.fromisoformat(text) == moment
