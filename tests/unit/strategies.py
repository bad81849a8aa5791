"""Hypothesis strategies for every `AgentEvent` variant, whole runs and `RunState`s.

Import them as `tests.unit.strategies`. Values stay inside what the wire carries:
text without lone surrogates (not UTF-8), integers within Avro's signed 64 bits, JSON
without NaN or integers beyond 64 bits (orjson's range), and tz-aware UTC datetimes
over Python's whole range (years 1 to 9999, well inside timestamp-micros).

    events()                     any event of any run
    agent_events(run_id=...)     events of one run (sequence, payload also fixable)
    payloads(RunStarted, ...)    payloads of the given variants (default: all 17)
    run_histories(run_id=...)    a plausible run: RunStarted at 0, sequences 0..n-1,
                                 non-decreasing times, at most one terminal, last
    run_states()                 any RunState
    sample_events()              one fixed event per variant and nested union branch
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from behest.events import (
    PAYLOAD_TYPES,
    TERMINAL_TYPES,
    AgentEvent,
    AssistantMessageCommitted,
    CompactionCircuitOpened,
    ContextBuilt,
    DoomLoopDetected,
    KnownFinishReason,
    ModelStarted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunId,
    RunStarted,
    RunState,
    RunStatus,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolExecutionFailure,
    ToolExecutionFinished,
    ToolExecutionStarted,
    ToolExecutionSuccess,
    ToolMessageCommitted,
    UnknownFinishReason,
    UsageRecorded,
)

MAX_LONG = 2**63 - 1
MIN_TIME = datetime.min.replace(tzinfo=UTC)
MAX_TIME = datetime.max.replace(tzinfo=UTC)

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
"""Any Unicode text that UTF-8 can carry (no lone surrogates)."""

counts = st.integers(min_value=0, max_value=MAX_LONG)
"""Non-negative integers that fit an Avro long."""

tokens = st.integers(min_value=0, max_value=2**32)
"""Token counts: large, yet a run's sum stays far inside 64 bits."""

run_ids = st.uuids().map(RunId)


def utc_datetimes(
    min_value: datetime = MIN_TIME, max_value: datetime = MAX_TIME
) -> st.SearchStrategy[datetime]:
    """Tz-aware UTC datetimes (microsecond resolution) between two aware bounds."""
    return st.datetimes(
        min_value=min_value.replace(tzinfo=None),
        max_value=max_value.replace(tzinfo=None),
        timezones=st.just(UTC),
    )


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=MAX_LONG)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
"""JSON that survives JSON text both ways (no NaN, integers within 64 bits)."""

finish_reasons = st.sampled_from(KnownFinishReason) | st.builds(UnknownFinishReason, unknown=texts)

PAYLOADS: dict[type[Any], st.SearchStrategy[Any]] = {
    RunStarted: st.builds(
        RunStarted,
        session_id=st.uuids(),
        provider=texts,
        model=texts,
        metadata=json_values,
    ),
    ContextBuilt: st.builds(ContextBuilt, message_count=counts),
    ModelStarted: st.builds(ModelStarted, provider=texts, model=texts, iteration=counts),
    TextDelta: st.builds(TextDelta, delta=texts),
    ToolCallStarted: st.builds(ToolCallStarted, call_id=texts, tool_name=texts),
    ToolCallDelta: st.builds(ToolCallDelta, call_id=texts, delta=texts),
    ToolCallCompleted: st.builds(
        ToolCallCompleted, call=st.builds(ToolCall, id=texts, name=texts, arguments=json_values)
    ),
    ToolExecutionStarted: st.builds(ToolExecutionStarted, call_id=texts, tool_name=texts),
    ToolExecutionFinished: st.builds(
        ToolExecutionFinished,
        call_id=texts,
        tool_name=texts,
        result=st.builds(ToolExecutionSuccess, output=json_values)
        | st.builds(ToolExecutionFailure, error=texts),
        duration_ms=counts,
    ),
    AssistantMessageCommitted: st.builds(AssistantMessageCommitted, message_id=st.uuids()),
    ToolMessageCommitted: st.builds(ToolMessageCommitted, message_id=st.uuids()),
    UsageRecorded: st.builds(
        UsageRecorded,
        usage=st.builds(TokenUsage, input_tokens=tokens, output_tokens=tokens, total_tokens=tokens),
    ),
    RunCompleted: st.builds(RunCompleted, finish_reason=finish_reasons, iterations=counts),
    RunFailed: st.builds(RunFailed, error=texts),
    RunCancelled: st.builds(RunCancelled),
    DoomLoopDetected: st.builds(DoomLoopDetected, description=texts),
    CompactionCircuitOpened: st.builds(CompactionCircuitOpened, consecutive_failures=counts),
}
"""One strategy per variant, keyed by its class."""


def payloads(*types: type[Any]) -> st.SearchStrategy[Any]:
    """Payloads of the given variants (default: all 17)."""
    return st.one_of(*(PAYLOADS[cls] for cls in types or PAYLOAD_TYPES))


def agent_events(
    run_id: uuid.UUID | None = None,
    *,
    sequence: int | None = None,
    payload: st.SearchStrategy[Any] | None = None,
    timestamps: st.SearchStrategy[datetime] | None = None,
) -> st.SearchStrategy[AgentEvent]:
    """Events of the given run (else of random runs), any sequence, variant and time
    unless fixed."""
    return st.builds(
        AgentEvent,
        event_id=st.uuids(),
        run_id=run_ids if run_id is None else st.just(RunId(run_id)),
        sequence=counts if sequence is None else st.just(sequence),
        timestamp=utc_datetimes() if timestamps is None else timestamps,
        payload=payloads() if payload is None else payload,
    )


def events() -> st.SearchStrategy[AgentEvent]:
    """Any event of any run."""
    return agent_events()


_MIDDLE_TYPES = tuple(
    cls for cls in PAYLOAD_TYPES if cls is not RunStarted and cls.__name__ not in TERMINAL_TYPES
)
_TERMINAL_CLASSES = tuple(cls for cls in PAYLOAD_TYPES if cls.__name__ in TERMINAL_TYPES)


@st.composite
def run_histories(
    draw: st.DrawFn,
    run_id: uuid.UUID | None = None,
    *,
    max_events: int = 20,
    terminal: bool | None = None,
) -> list[AgentEvent]:
    """A run as its producer writes it: RunStarted at sequence 0, then middle events,
    then (if `terminal`, or at random when None) one terminal event; times never decrease."""
    rid = RunId(run_id) if run_id is not None else draw(run_ids)
    ends = draw(st.booleans()) if terminal is None else terminal
    middle = draw(st.lists(payloads(*_MIDDLE_TYPES), max_size=max(0, max_events - 2)))
    body = [draw(PAYLOADS[RunStarted]), *middle]
    if ends:
        body.append(draw(payloads(*_TERMINAL_CLASSES)))
    time = draw(utc_datetimes(max_value=datetime(9000, 1, 1, tzinfo=UTC)))
    history = []
    for sequence, payload in enumerate(body):
        time += timedelta(microseconds=draw(st.integers(0, 10**9)))
        history.append(
            AgentEvent(
                event_id=draw(st.uuids()),
                run_id=rid,
                sequence=sequence,
                timestamp=time,
                payload=payload,
            )
        )
    return history


def run_states() -> st.SearchStrategy[RunState]:
    """Any `RunState` (not necessarily one a fold can reach)."""
    return st.builds(
        RunState,
        run_id=run_ids,
        session_id=st.uuids(),
        status=st.sampled_from(RunStatus),
        provider=texts,
        model=texts,
        metadata=json_values,
        iteration=counts,
        total_usage=st.builds(TokenUsage.new, tokens, tokens),
        last_finish=st.none() | finish_reasons,
        last_error=st.none() | texts,
        event_count=counts,
        created_at=utc_datetimes(),
        updated_at=utc_datetimes(),
        sequence=counts,
    )


def sample_events(run_id: uuid.UUID | None = None) -> list[AgentEvent]:
    """One realistic event per variant, plus both branches of every nested union, in
    union order: deterministic inputs for table-driven tests."""
    rid = RunId(run_id or uuid.UUID("3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00"))
    start = datetime(2026, 11, 20, 14, 3, 7, 123456, tzinfo=UTC)
    bodies: list[Any] = [
        RunStarted(
            session_id=uuid.UUID("9b1d0c1e-2f3a-4b5c-8d6e-7f8091a2b3c4"),
            provider="openai",
            model="gpt-4o",
            metadata={"user": "ada", "tags": ["a", "b"], "n": 1.5},
        ),
        ContextBuilt(message_count=12),
        ModelStarted(provider="openai", model="gpt-4o", iteration=1),
        TextDelta(delta="Hello, wörld ✓"),
        ToolCallStarted(call_id="call_1", tool_name="search"),
        ToolCallDelta(call_id="call_1", delta='{"q": "kaf'),
        ToolCallCompleted(call=ToolCall(id="call_1", name="search", arguments={"q": "kafka"})),
        ToolExecutionStarted(call_id="call_1", tool_name="search"),
        ToolExecutionFinished(
            call_id="call_1",
            tool_name="search",
            result=ToolExecutionSuccess(output=[{"title": "Kafka", "score": 0.9}]),
            duration_ms=87,
        ),
        ToolExecutionFinished(
            call_id="call_2",
            tool_name="fetch",
            result=ToolExecutionFailure(error="timeout after 30 s"),
            duration_ms=30_000,
        ),
        AssistantMessageCommitted(message_id=uuid.UUID("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")),
        ToolMessageCommitted(message_id=uuid.UUID("1a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")),
        UsageRecorded(usage=TokenUsage.new(1200, 345)),
        RunCompleted(finish_reason=KnownFinishReason.STOP, iterations=2),
        RunCompleted(finish_reason=UnknownFinishReason(unknown="max_turns"), iterations=9),
        RunFailed(error="provider returned 500"),
        RunCancelled(),
        DoomLoopDetected(description="same tool call 5 times"),
        CompactionCircuitOpened(consecutive_failures=3),
    ]
    return [
        AgentEvent(
            event_id=uuid.UUID(int=sequence + 1),
            run_id=rid,
            sequence=sequence,
            timestamp=start + timedelta(milliseconds=sequence),
            payload=payload,
        )
        for sequence, payload in enumerate(bodies)
    ]
