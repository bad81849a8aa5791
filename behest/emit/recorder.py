"""Run-scoped emitting: a runtime hands over payloads, the recorder stamps the envelope.

    recorder = producer.run(session_id=session_id)
    recorder.start(provider="openai", model="gpt-4o", metadata={"user": "u-17"})
    recorder.emit(ModelStarted(provider="openai", model="gpt-4o", iteration=1))

The recorder owns the envelope's bookkeeping so services cannot get it wrong: a fresh
`event_id` per event, the run's `sequence` 0, 1, 2, … without gaps, and a UTC timestamp at
microsecond resolution that never goes back within the run (point-in-time queries fold
"every event up to time T" and must not meet sequence 7 before sequence 6).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from pydantic import JsonValue

from behest.emit.delivery import Delivery
from behest.events import (
    PAYLOAD_TYPES,
    AgentEvent,
    FinishReason,
    KnownFinishReason,
    ModelName,
    ModelStarted,
    Payload,
    ProviderId,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunId,
    RunStarted,
    new_run_id,
    utc_now,
)

__all__ = ["AsyncRunRecorder", "RunRecorder", "RunStamper"]

_PAYLOAD_TYPES = frozenset(PAYLOAD_TYPES)


class RunStamper:
    """The pure part: turns payloads into `AgentEvent`s of one run. No I/O."""

    def __init__(
        self,
        run_id: uuid.UUID | str | None = None,
        *,
        session_id: uuid.UUID | None = None,
        next_sequence: int = 0,
        clock: Callable[[], datetime] = utc_now,
        new_event_id: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        if next_sequence < 0:
            raise ValueError(f"next_sequence must be 0 or more, got {next_sequence}")
        if run_id is None:
            self.run_id = new_run_id()
        elif isinstance(run_id, uuid.UUID):
            self.run_id = RunId(run_id)
        else:
            self.run_id = RunId(uuid.UUID(run_id))
        self.session_id = session_id
        self.next_sequence = next_sequence
        self.iteration = 0
        self._clock = clock
        self._new_event_id = new_event_id
        self._last_time: datetime | None = None

    def stamp(self, payload: Payload) -> AgentEvent:
        """The next event of this run carrying `payload`."""
        if type(payload) not in _PAYLOAD_TYPES:
            raise TypeError(
                f"a recorder emits payloads such as TextDelta(...), got {type(payload).__name__}"
                + (
                    "; emit a whole AgentEvent with producer.emit(event)"
                    if isinstance(payload, AgentEvent)
                    else ""
                )
            )
        now = self._clock()
        if self._last_time is not None and now < self._last_time:
            now = self._last_time  # the clock stepped back: keep the run's times monotonic
        self._last_time = now
        if isinstance(payload, ModelStarted):
            self.iteration = payload.iteration
        elif isinstance(payload, RunStarted):
            self.session_id = payload.session_id
        # Every part is valid by construction (the payload was validated when it was made),
        # so skip a second pydantic pass on the hot path.
        event = AgentEvent.model_construct(
            event_id=self._new_event_id(),
            run_id=self.run_id,
            sequence=self.next_sequence,
            timestamp=now,
            payload=payload,
        )
        self.next_sequence += 1
        return event

    def run_started(
        self,
        provider: str,
        model: str,
        session_id: uuid.UUID | None = None,
        metadata: JsonValue = None,
    ) -> RunStarted:
        """The `RunStarted` payload; the session is the given one, the recorder's, or new."""
        session = session_id or self.session_id or uuid.uuid4()
        self.session_id = session
        return RunStarted(
            session_id=session,
            provider=ProviderId(provider),
            model=ModelName(model),
            metadata=metadata,
        )

    def run_completed(
        self,
        finish_reason: FinishReason | str = KnownFinishReason.STOP,
        iterations: int | None = None,
    ) -> RunCompleted:
        """`RunCompleted`; `iterations` defaults to the last `ModelStarted` iteration."""
        return RunCompleted.model_validate(
            {
                "finish_reason": finish_reason,
                "iterations": self.iteration if iterations is None else iterations,
            }
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(run_id={str(self.run_id)!r}, next={self.next_sequence})"


F = TypeVar("F", covariant=True)
FL = TypeVar("FL", covariant=True)


class Emitter(Protocol[F, FL]):
    """What a recorder needs of a producer: `EventProducer` and `AsyncEventProducer` fit."""

    def emit(self, event: AgentEvent) -> F: ...

    def emit_many(self, events: Iterable[AgentEvent]) -> FL: ...


class _Recorder(RunStamper, Generic[F, FL]):
    """Stamps payloads and queues them on a producer; one lock makes sequence order log
    order, and an event that was not queued leaves no gap in the sequences."""

    def __init__(
        self,
        producer: Emitter[F, FL],
        run_id: uuid.UUID | str | None = None,
        *,
        session_id: uuid.UUID | None = None,
        next_sequence: int = 0,
        clock: Callable[[], datetime] = utc_now,
        new_event_id: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        super().__init__(
            run_id,
            session_id=session_id,
            next_sequence=next_sequence,
            clock=clock,
            new_event_id=new_event_id,
        )
        self.producer = producer
        self._lock = threading.Lock()

    def emit(self, payload: Payload) -> F:
        """Stamp and queue one event; the result resolves to its `Delivery`."""
        with self._lock:
            event = self.stamp(payload)
            try:
                return self.producer.emit(event)
            except BaseException:
                self.next_sequence = event.sequence  # it was not queued: leave no gap
                raise

    def emit_many(self, payloads: Iterable[Payload]) -> FL:
        """Stamp and queue several events, in order."""
        with self._lock:
            sequence = self.next_sequence
            try:
                return self.producer.emit_many([self.stamp(p) for p in payloads])
            except BaseException:
                self.next_sequence = sequence  # nothing was queued: no gap
                raise

    def start(
        self,
        provider: str,
        model: str,
        session_id: uuid.UUID | None = None,
        metadata: JsonValue = None,
    ) -> F:
        """Emit `RunStarted` (a new session id unless one is given or known)."""
        return self.emit(self.run_started(provider, model, session_id, metadata))

    def complete(
        self,
        finish_reason: FinishReason | str = KnownFinishReason.STOP,
        iterations: int | None = None,
    ) -> F:
        """Emit `RunCompleted`."""
        return self.emit(self.run_completed(finish_reason, iterations))

    def fail(self, error: str) -> F:
        """Emit `RunFailed`."""
        return self.emit(RunFailed(error=error))

    def cancel(self) -> F:
        """Emit `RunCancelled`."""
        return self.emit(RunCancelled())


class RunRecorder(_Recorder[Future[Delivery], Future[list[Delivery]]]):
    """Emits one run's events through an `EventProducer` (thread-safe)."""


class AsyncRunRecorder(_Recorder[asyncio.Future[Delivery], asyncio.Future[list[Delivery]]]):
    """Emits one run's events through an `AsyncEventProducer` (use from its event loop)."""
