"""What every SDK integration shares: one behest run per run of the SDK, stamped by a
`RunRecorder`, so the SDK's callbacks only say what happened.

The SDKs announce a run before they know its model, but `RunStarted` carries the model:
a tracker holds `RunStarted` back until the first model call names it (or the run ends).
Tool calls the model asked for wait in a queue per tool name until the SDK executes them,
which is how an execution finds its call id when the SDK's callback does not carry it.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from pydantic import JsonValue

from behest.emit.delivery import Delivery
from behest.emit.producer import EventProducer
from behest.events import (
    AssistantMessageCommitted,
    ContextBuilt,
    FinishReason,
    KnownFinishReason,
    ModelStarted,
    Payload,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallStarted,
    ToolExecutionFailure,
    ToolExecutionFinished,
    ToolExecutionStarted,
    ToolExecutionSuccess,
    ToolMessageCommitted,
    UnknownFinishReason,
    UsageRecorded,
)

__all__ = ["RunTracker", "RunTrackers", "finish_reason", "json_value", "stable_uuid"]

log = logging.getLogger("behest.integrations")

_NAMESPACE = uuid.UUID("6c1f4a52-3a0e-4f7e-9a35-0b7e2f7b1d11")

_FINISH_REASONS: Mapping[str, KnownFinishReason] = {
    "stop": KnownFinishReason.STOP,
    "end_turn": KnownFinishReason.STOP,
    "completed": KnownFinishReason.STOP,
    "tool_calls": KnownFinishReason.TOOL_CALLS,
    "tool_use": KnownFinishReason.TOOL_CALLS,
    "function_call": KnownFinishReason.TOOL_CALLS,
    "length": KnownFinishReason.LENGTH,
    "max_tokens": KnownFinishReason.LENGTH,
    "max_output_tokens": KnownFinishReason.LENGTH,
    "content_filter": KnownFinishReason.CONTENT_FILTER,
    "error": KnownFinishReason.ERROR,
}


def stable_uuid(*parts: str) -> uuid.UUID:
    """A UUID that is the same for the same parts: message ids, sessions from SDK keys."""
    return uuid.uuid5(_NAMESPACE, "\x1f".join(parts))


def finish_reason(reason: str | None, *, tool_calls: bool) -> FinishReason:
    """A provider's finish reason in behest's terms (tool calls when the model asked for
    tools and said nothing else)."""
    if reason is None:
        return KnownFinishReason.TOOL_CALLS if tool_calls else KnownFinishReason.STOP
    known = _FINISH_REASONS.get(reason.lower())
    return known if known is not None else UnknownFinishReason(unknown=reason)


def json_value(value: Any) -> JsonValue:
    """A tool's arguments or output as JSON: JSON text is parsed, anything else that JSON
    cannot hold is kept as its text."""
    if isinstance(value, str):
        try:
            parsed: JsonValue = json.loads(value)
        except ValueError:
            return value
        return parsed
    try:
        return json.loads(json.dumps(value))  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        return str(value)


def _log_failure(future: Future[Delivery]) -> None:
    error = future.exception()
    if error is not None:
        log.warning("a behest event of an SDK run was not delivered: %s", error)


class RunTracker:
    """One SDK run turned into one behest run (thread-safe: its recorder holds a lock)."""

    def __init__(
        self,
        producer: EventProducer,
        run_id: uuid.UUID,
        *,
        provider: str,
        session_id: uuid.UUID | None = None,
        metadata: JsonValue = None,
    ) -> None:
        self.recorder = producer.run(run_id, session_id=session_id)
        self.provider = provider
        self.metadata = metadata
        self.started = False
        self.iterations = 0
        self.finish: FinishReason = KnownFinishReason.STOP
        self.error: str | None = None
        self._waiting: dict[str, deque[str]] = {}
        self._lock = threading.Lock()

    @property
    def run_id(self) -> uuid.UUID:
        return self.recorder.run_id

    def emit(self, payload: Payload) -> None:
        """Emit one event; a delivery failure is logged, never raised into the SDK."""
        self.recorder.emit(payload).add_done_callback(_log_failure)

    def model_started(
        self, model: str, provider: str | None = None, *, message_count: int | None = None
    ) -> None:
        """`RunStarted` (once, now that a model is known), `ContextBuilt` when the SDK says
        how many messages go to the model, then `ModelStarted`."""
        provider = provider or self.provider
        with self._lock:
            if not self.started:
                self.started = True
                self.emit(self.recorder.run_started(provider, model, metadata=self.metadata))
            self.iterations += 1
            iteration = self.iterations
        if message_count is not None:
            self.emit(ContextBuilt(message_count=message_count))
        self.emit(ModelStarted(provider=provider, model=model, iteration=iteration))

    def model_output(
        self,
        *,
        text: str,
        calls: list[tuple[str, str, Any]],
        usage: tuple[int, int] | None,
        reason: str | None,
        message_key: str,
    ) -> None:
        """What one model call produced: its text, the tool calls it asked for (id, name,
        arguments), the assistant message and the tokens it used."""
        if text:
            self.emit(TextDelta(delta=text))
        for call_id, name, arguments in calls:
            self.emit(ToolCallStarted(call_id=call_id, tool_name=name))
            self.emit(
                ToolCallCompleted(
                    call=ToolCall(id=call_id, name=name, arguments=json_value(arguments))
                )
            )
            with self._lock:
                self._waiting.setdefault(name, deque()).append(call_id)
        self.emit(AssistantMessageCommitted(message_id=stable_uuid(str(self.run_id), message_key)))
        if usage is not None:
            self.emit(UsageRecorded(usage=TokenUsage.new(*usage)))
        self.finish = finish_reason(reason, tool_calls=bool(calls))

    def take_call(self, name: str, *, prefix: bool = False) -> tuple[str, str] | None:
        """The oldest call the model made to tool `name` (or, with `prefix`, to any tool
        whose name starts with it) that has not run yet: (call id, tool name)."""
        with self._lock:
            for tool, waiting in self._waiting.items():
                if waiting and (tool.startswith(name) if prefix else tool == name):
                    return waiting.popleft(), tool
        return None

    def tool_started(self, call_id: str, name: str) -> None:
        self.emit(ToolExecutionStarted(call_id=call_id, tool_name=name))

    def tool_finished(
        self, call_id: str, name: str, *, output: Any, error: str | None, duration_ms: int
    ) -> None:
        """`ToolExecutionFinished` (a failure when `error` is set) and the tool message."""
        result = (
            ToolExecutionFailure(error=error)
            if error is not None
            else ToolExecutionSuccess(output=json_value(output))
        )
        self.emit(
            ToolExecutionFinished(
                call_id=call_id, tool_name=name, result=result, duration_ms=max(duration_ms, 0)
            )
        )
        self.emit(ToolMessageCommitted(message_id=stable_uuid(str(self.run_id), "tool", call_id)))

    def end(self, *, error: str | None = None, cancelled: bool = False) -> None:
        """The terminal event: failed with `error` (or the error seen during the run),
        cancelled, or completed with the last model call's finish reason."""
        with self._lock:
            if not self.started:  # no model call at all: the run still gets its start
                self.started = True
                self.emit(self.recorder.run_started(self.provider, "unknown", None, self.metadata))
        error = error or self.error
        if cancelled:
            done = self.recorder.cancel()
        elif error is not None:
            done = self.recorder.fail(error)
        else:
            done = self.recorder.complete(self.finish, self.iterations)
        done.add_done_callback(_log_failure)


class RunTrackers:
    """The runs in flight, by the SDK's own id (several may run at once, on any thread)."""

    def __init__(self) -> None:
        self._runs: dict[Any, RunTracker] = {}
        self._lock = threading.Lock()

    def add(self, key: Any, run: RunTracker) -> None:
        with self._lock:
            self._runs[key] = run

    def get(self, key: Any) -> RunTracker | None:
        with self._lock:
            return self._runs.get(key)

    def pop(self, key: Any) -> RunTracker | None:
        with self._lock:
            return self._runs.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)
