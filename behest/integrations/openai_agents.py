"""The OpenAI Agents SDK, recorded as behest runs: one line in an agent service.

    from agents import add_trace_processor
    from behest.integrations.openai_agents import BehestTracingProcessor

    add_trace_processor(BehestTracingProcessor(producer))  # producer: an EventProducer

The SDK reports every run as a trace of spans; this processor turns them into events as
they end (`pip install 'behest[openai-agents]'`):

- a trace (one `Runner.run`): one run; its id is the trace id's 128 bits, its session
  the trace's `group_id`;
- a generation or response span: `RunStarted` (first call only), `ModelStarted`,
  `TextDelta`, `ToolCallStarted` + `ToolCallCompleted` per call,
  `AssistantMessageCommitted`, `UsageRecorded`;
- a function span: `ToolExecutionStarted`, then `ToolExecutionFinished` (a failure when
  the span has an error) + `ToolMessageCommitted`;
- a handoff span: the same, for the `transfer_to_...` call the model made; its output
  names the agent handed to;
- the trace's end: `RunFailed` if an agent or task span, or the last model call, had an
  error, else `RunCompleted` with the last call's finish reason.

Tracing must be on (it is by default); with `set_trace_processors([...])` this processor
can be the only one, so nothing leaves the service but Kafka records.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from agents.tracing import Span, Trace, TracingProcessor
from agents.tracing.span_data import (
    AgentSpanData,
    FunctionSpanData,
    GenerationSpanData,
    HandoffSpanData,
    ResponseSpanData,
    TaskSpanData,
)

from behest.emit.producer import EventProducer
from behest.integrations._tracker import RunTracker, RunTrackers, stable_uuid

__all__ = ["BehestTracingProcessor", "run_id_of_trace"]

_HANDOFF_PREFIX = "transfer_to_"


def run_id_of_trace(trace_id: str) -> uuid.UUID:
    """The behest run id of an SDK trace (`trace_<32 hex>` is a UUID's 128 bits)."""
    digits = trace_id.removeprefix("trace_")
    try:
        return uuid.UUID(hex=digits)
    except ValueError:
        return stable_uuid("openai-agents", trace_id)


def _error_text(span: Span[Any]) -> str | None:
    error = span.error
    if not error:
        return None
    data = error.get("data") or {}
    detail = data.get("error", data) if isinstance(data, dict) else data
    return f"{error.get('message')}: {detail}" if detail else str(error.get("message"))


def _duration_ms(span: Span[Any]) -> int:
    try:
        started = datetime.fromisoformat(span.started_at or "")
        ended = datetime.fromisoformat(span.ended_at or "")
    except ValueError:
        return 0
    return int((ended - started).total_seconds() * 1000)


def _text(content: Any) -> str:
    """The text of a chat message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class BehestTracingProcessor(TracingProcessor):
    """A `TracingProcessor` that records each agent run as behest events."""

    def __init__(self, producer: EventProducer, *, provider: str = "openai") -> None:
        self.producer = producer
        self.provider = provider
        self._runs = RunTrackers()
        self._tools: dict[str, tuple[str, str]] = {}  # span id -> (call id, tool name)

    # --- traces -----------------------------------------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        exported = trace.export() or {}
        group = exported.get("group_id")
        metadata: dict[str, Any] = {
            "source": "openai-agents",
            "trace_id": trace.trace_id,
            "workflow_name": trace.name,
        }
        if group:
            metadata["group_id"] = group
        if exported.get("metadata"):
            metadata["trace_metadata"] = exported["metadata"]
        session = stable_uuid("openai-agents.group", str(group)) if group else None
        tracker = RunTracker(
            self.producer,
            run_id_of_trace(trace.trace_id),
            provider=self.provider,
            session_id=session,
            metadata=metadata,
        )
        self._runs.add(trace.trace_id, tracker)

    def on_trace_end(self, trace: Trace) -> None:
        run = self._runs.pop(trace.trace_id)
        if run is not None:
            run.end()

    # --- spans ------------------------------------------------------------------------------

    def on_span_start(self, span: Span[Any]) -> None:
        run = self._runs.get(span.trace_id)
        if run is None:
            return
        data = span.span_data
        if isinstance(data, GenerationSpanData) and data.model:
            run.model_started(data.model)
        elif isinstance(data, FunctionSpanData):
            found = run.take_call(data.name)
            call_id, name = found if found is not None else (span.span_id, data.name)
            self._tools[span.span_id] = (call_id, name)
            run.tool_started(call_id, name)
        elif isinstance(data, HandoffSpanData):
            target = f"{_HANDOFF_PREFIX}{data.to_agent}" if data.to_agent else _HANDOFF_PREFIX
            found = run.take_call(target, prefix=True)
            call_id, name = found if found is not None else (span.span_id, target)
            self._tools[span.span_id] = (call_id, name)
            run.tool_started(call_id, name)

    def on_span_end(self, span: Span[Any]) -> None:
        run = self._runs.get(span.trace_id)
        if run is None:
            return
        data = span.span_data
        error = _error_text(span)
        if isinstance(data, GenerationSpanData):
            self._generation(run, span, data)
            run.error = error  # the last model call decides: a retried failure is no failure
        elif isinstance(data, ResponseSpanData):
            self._response(run, span, data)
            run.error = error
        elif isinstance(data, FunctionSpanData | HandoffSpanData):
            call_id, name = self._tools.pop(span.span_id, (span.span_id, "unknown"))
            output: Any = (
                data.output if isinstance(data, FunctionSpanData) else {"assistant": data.to_agent}
            )
            run.tool_finished(
                call_id, name, output=output, error=error, duration_ms=_duration_ms(span)
            )
        elif isinstance(data, AgentSpanData | TaskSpanData) and error is not None:
            run.error = error

    def _generation(self, run: RunTracker, span: Span[Any], data: GenerationSpanData) -> None:
        if not data.model:
            run.model_started("unknown")
        text, calls = "", []
        for message in data.output or ():
            text += _text(message.get("content"))
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                calls.append(
                    (str(call.get("id")), str(function.get("name")), function.get("arguments"))
                )
        usage = data.usage or {}
        tokens = (
            (int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
            if usage
            else None
        )
        run.model_output(
            text=text, calls=calls, usage=tokens, reason=None, message_key=span.span_id
        )

    def _response(self, run: RunTracker, span: Span[Any], data: ResponseSpanData) -> None:
        response = data.response
        run.model_started(str(response.model) if response is not None else "unknown")
        if response is None:
            run.model_output(text="", calls=[], usage=None, reason=None, message_key=span.span_id)
            return
        text, calls = "", []
        for item in response.output:
            if item.type == "message":
                text += "".join(getattr(part, "text", "") for part in item.content)
            elif item.type == "function_call":
                calls.append((item.call_id, item.name, item.arguments))
        usage = response.usage
        tokens = (usage.input_tokens, usage.output_tokens) if usage is not None else None
        incomplete = response.incomplete_details
        reason = incomplete.reason if incomplete is not None else None
        run.model_output(
            text=text, calls=calls, usage=tokens, reason=reason, message_key=span.span_id
        )

    # --- lifecycle --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Deliver what was emitted (the SDK shuts its processors down at exit)."""
        self.force_flush()

    def force_flush(self) -> None:
        self.producer.flush(self.producer.delivery_timeout)
