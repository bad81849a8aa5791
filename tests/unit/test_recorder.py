"""The recorder stamps ids, gap-free sequences and monotonic UTC times; no broker needed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import ValidationError

from behest.emit.delivery import Delivery
from behest.emit.producer import EventProducer, check_event
from behest.emit.recorder import RunRecorder, RunStamper
from behest.errors import ProduceError
from behest.events import (
    AgentEvent,
    KnownFinishReason,
    ModelStarted,
    RunCompleted,
    RunStarted,
    TextDelta,
    UnknownFinishReason,
)


class Collector:
    """Stands in for the producer's queue (not for Kafka): records what would be sent."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.events: list[AgentEvent] = []
        self.fail_after = fail_after

    def emit(self, event: AgentEvent) -> Future[Delivery]:
        if self.fail_after is not None and len(self.events) >= self.fail_after:
            raise ProduceError("closed")
        self.events.append(event)
        future: Future[Delivery] = Future()
        future.set_result(Delivery("t", 0, len(self.events) - 1))
        return future

    def emit_many(self, events: Iterable[AgentEvent]) -> Future[list[Delivery]]:
        batch = list(events)
        if self.fail_after is not None and len(self.events) + len(batch) > self.fail_after:
            raise ProduceError("closed")
        self.events.extend(batch)
        future: Future[list[Delivery]] = Future()
        future.set_result([Delivery("t", 0, i) for i in range(len(batch))])
        return future


def recorder(collector: Collector, **kwargs: Any) -> RunRecorder:
    return RunRecorder(cast(EventProducer, collector), **kwargs)


def ticking(start: datetime, steps: Iterable[int]) -> Iterator[datetime]:
    for micros in steps:
        yield start + timedelta(microseconds=micros)


def test_sequences_ids_and_times() -> None:
    collector = Collector()
    rec = recorder(collector)
    rec.start(provider="openai", model="gpt-4o", metadata={"user": "u1"})
    rec.emit(ModelStarted(provider="openai", model="gpt-4o", iteration=1))
    rec.emit_many([TextDelta(delta="a"), TextDelta(delta="b")])
    rec.complete()
    events = collector.events
    assert [e.sequence for e in events] == [0, 1, 2, 3, 4]
    assert {e.run_id for e in events} == {rec.run_id}
    assert len({e.event_id for e in events}) == 5
    assert all(e.timestamp.tzinfo is UTC for e in events)
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    started = events[0].payload
    assert isinstance(started, RunStarted)
    assert started.session_id == rec.session_id
    assert started.metadata == {"user": "u1"}
    completed = events[-1].payload
    assert isinstance(completed, RunCompleted)
    assert completed.iterations == 1  # the last ModelStarted iteration
    assert completed.finish_reason is KnownFinishReason.STOP
    # What the recorder builds is exactly what validation would build.
    for event in events:
        assert AgentEvent.model_validate(event.model_dump()) == event


def test_times_never_go_back_within_a_run() -> None:
    start = datetime(2026, 11, 20, 12, tzinfo=UTC)
    clock = ticking(start, [10, 5, 20, 20, 3])
    stamper = RunStamper(clock=lambda: next(clock))
    times = [stamper.stamp(TextDelta(delta="x")).timestamp for _ in range(5)]
    offsets = [int((t - start) / timedelta(microseconds=1)) for t in times]
    assert offsets == [10, 10, 20, 20, 20]


def test_given_run_session_and_next_sequence() -> None:
    run_id = uuid.uuid4()
    session = uuid.uuid4()
    stamper = RunStamper(str(run_id), session_id=session, next_sequence=7)
    assert stamper.run_id == run_id
    started = stamper.run_started("anthropic", "claude-sonnet-4")
    assert started.session_id == session
    assert stamper.stamp(started).sequence == 7
    assert stamper.stamp(TextDelta(delta="x")).sequence == 8


def test_seeded_event_ids() -> None:
    ids = iter([uuid.UUID(int=1), uuid.UUID(int=2)])
    stamper = RunStamper(new_event_id=lambda: next(ids))
    assert stamper.stamp(TextDelta(delta="a")).event_id == uuid.UUID(int=1)
    assert stamper.stamp(TextDelta(delta="b")).event_id == uuid.UUID(int=2)


def test_unknown_finish_reason() -> None:
    completed = RunStamper().run_completed({"unknown": "pause_turn"}, iterations=2)
    assert completed.finish_reason == UnknownFinishReason(unknown="pause_turn")


def test_rejects_what_is_not_a_payload() -> None:
    stamper = RunStamper()
    with pytest.raises(TypeError, match="payloads such as TextDelta"):
        stamper.stamp({"type": "TextDelta", "delta": "x"})  # type: ignore[arg-type]
    event = stamper.stamp(TextDelta(delta="x"))
    with pytest.raises(TypeError, match=r"producer\.emit\(event\)"):
        stamper.stamp(event)  # type: ignore[arg-type]
    assert stamper.next_sequence == 1  # nothing consumed by the rejected calls


def test_a_refused_emit_leaves_no_gap() -> None:
    collector = Collector(fail_after=2)
    rec = recorder(collector)
    rec.emit(TextDelta(delta="a"))
    rec.emit(TextDelta(delta="b"))
    with pytest.raises(ProduceError):
        rec.emit(TextDelta(delta="c"))
    with pytest.raises(ProduceError):
        rec.emit_many([TextDelta(delta="c"), TextDelta(delta="d")])
    assert rec.next_sequence == 2
    collector.fail_after = None
    rec.emit(TextDelta(delta="c"))
    assert [e.sequence for e in collector.events] == [0, 1, 2]


def test_invalid_payloads_never_get_built() -> None:
    with pytest.raises(ValidationError):
        ModelStarted(provider="p", model="m", iteration=-1)
    with pytest.raises(ValidationError):
        TextDelta(delta=None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        AgentEvent(run_id="not-a-uuid", sequence=0, payload=TextDelta(delta="x"))  # type: ignore[arg-type]


def test_check_event_says_what_to_pass() -> None:
    with pytest.raises(TypeError, match=r"takes an AgentEvent, got dict"):
        check_event({"run_id": "x"})
    with pytest.raises(TypeError, match=r"got TextDelta \(a payload"):
        check_event(TextDelta(delta="x"))
    event = RunStamper().stamp(TextDelta(delta="x"))
    assert check_event(event) is event
