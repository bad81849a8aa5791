"""Each run as OpenTelemetry GenAI spans, so runs appear in any OTel backend.

The fold is pure, like every projection: a run's events become a span tree kept as its
state, following the GenAI semantic conventions at version `SEMCONV_VERSION`:

    invoke_agent            the run: RunStarted .. RunCompleted / RunFailed / RunCancelled
    ├─ chat <model>         each model call: ModelStarted .. its last output
    └─ execute_tool <tool>  each tool execution: ToolExecutionStarted .. Finished

with `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
`gen_ai.conversation.id` (the session), `gen_ai.usage.input_tokens` /
`output_tokens` (per call, and summed on the run), `gen_ai.response.finish_reasons`,
`gen_ai.tool.name` / `gen_ai.tool.call.id`, and `error.type` with an error status for
failed runs and tools. The trace id is the run id's 128 bits and every span id is derived
from the run and the sequence that opened it, so a rebuild exports the same ids.

Exporting is the I/O part: `export_runs(states, exporter)` sends finished runs to any
OpenTelemetry `SpanExporter` (`behest project --projection otel` uses OTLP, `behest[otel]`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from behest.events import EventRecord, Variant

__all__ = ["SEMCONV_VERSION", "OtelProjection", "export_runs", "run_spans"]

SEMCONV_VERSION: Final = "1.37.0"
"""The OpenTelemetry semantic conventions these spans follow (the GenAI conventions are in
development upstream: names are pinned to this release)."""
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

OP: Final = "gen_ai.operation.name"
PROVIDER: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
CONVERSATION: Final = "gen_ai.conversation.id"
INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
TOOL_TYPE: Final = "gen_ai.tool.type"
ERROR_TYPE: Final = "error.type"

_EARLIEST: Final = -(2**63)
_NOTED: Final = frozenset(
    (Variant.DOOM_LOOP_DETECTED, Variant.COMPACTION_CIRCUIT_OPENED, Variant.CONTEXT_BUILT)
)
"""Variants recorded as events of the open span."""
_ENDS: Final = frozenset(v for v in Variant if v.is_terminal)

Span = dict[str, Any]
"""A span as stored: name, id, parent, start/end (µs), attributes, events, error."""
OtelRun = dict[str, Any]
"""A run's state: `run_id`, `spans` (the root first), the open chat / tool spans, `ended`."""


def _span_id(run_id: str, sequence: int) -> str:
    """A stable, non-zero 64-bit span id (hex) for the span an event opened."""
    digest = hashlib.blake2b(f"{run_id}/{sequence}".encode(), digest_size=8).digest()
    return (digest if any(digest) else b"\x00" * 7 + b"\x01").hex()


def _open(run: OtelRun, event: EventRecord, name: str, attributes: dict[str, Any]) -> Span:
    span: Span = {
        "name": name,
        "id": _span_id(event["run_id"], event["sequence"]),
        "parent": run["spans"][0]["id"] if run["spans"] else None,
        "start": event["timestamp"],
        "end": None,
        "attributes": attributes,
        "events": [],
        "error": None,
    }
    run["spans"].append(span)
    return span


def _close(span: Span | None, at: int) -> None:
    if span is not None and span["end"] is None:
        span["end"] = at


def _finish_reason(reason: Any) -> str:
    return str(reason[1]["unknown"]) if isinstance(reason, tuple | list) else str(reason)


class OtelProjection:
    """Per run: its GenAI span tree (`name = "otel"`, run-keyed, so tombstones delete)."""

    name = "otel"
    run_keyed = True

    def key(self, event: EventRecord) -> bytes | None:
        return uuid.UUID(event["run_id"]).bytes

    def apply(self, state: OtelRun | None, event: EventRecord) -> OtelRun:
        run: OtelRun = (
            {"run_id": event["run_id"], "spans": [], "chat": None, "tools": {}, "ended": False}
            if state is None
            else orjson.loads(orjson.dumps(state))  # a deep copy: `state` stays as it was
        )
        spans: list[Span] = run["spans"]
        at = event["timestamp"]
        variant, body = event["payload"]
        if not spans:  # the root, whichever event comes first (normally RunStarted)
            _open(run, event, "invoke_agent", {OP: "invoke_agent", "behest.run_id": run["run_id"]})
        root = spans[0]
        chat = spans[run["chat"]] if run["chat"] is not None else None
        if variant == Variant.RUN_STARTED:
            root["attributes"].update(
                {
                    PROVIDER: body["provider"],
                    REQUEST_MODEL: body["model"],
                    CONVERSATION: body["session_id"],
                }
            )
        elif variant == Variant.MODEL_STARTED:
            _close(chat, at)
            _open(
                run,
                event,
                f"chat {body['model']}",
                {OP: "chat", PROVIDER: body["provider"], REQUEST_MODEL: body["model"]},
            )
            run["chat"] = len(spans) - 1
        elif variant == Variant.USAGE_RECORDED and chat is not None:
            usage = body["usage"]
            for span in (chat, root):
                attributes = span["attributes"]
                attributes[INPUT_TOKENS] = attributes.get(INPUT_TOKENS, 0) + usage["input_tokens"]
                attributes[OUTPUT_TOKENS] = (
                    attributes.get(OUTPUT_TOKENS, 0) + usage["output_tokens"]
                )
        elif variant == Variant.TOOL_EXECUTION_STARTED:
            _close(chat, at)
            _open(
                run,
                event,
                f"execute_tool {body['tool_name']}",
                {
                    OP: "execute_tool",
                    TOOL_NAME: body["tool_name"],
                    TOOL_CALL_ID: body["call_id"],
                    TOOL_TYPE: "function",
                },
            )
            run["tools"][body["call_id"]] = len(spans) - 1
        elif variant == Variant.TOOL_EXECUTION_FINISHED:
            index = run["tools"].pop(body["call_id"], None)
            if index is None:  # no start seen: the span is as long as the tool said
                began = max(at - body["duration_ms"] * 1000, _EARLIEST)  # a 64-bit time
                start = {**event, "timestamp": began}
                tool = _open(
                    run,
                    start,  # type: ignore[arg-type]
                    f"execute_tool {body['tool_name']}",
                    {
                        OP: "execute_tool",
                        TOOL_NAME: body["tool_name"],
                        TOOL_CALL_ID: body["call_id"],
                    },
                )
            else:
                tool = spans[index]
            _close(tool, at)
            result_name, result = body["result"]
            if result_name == Variant.TOOL_EXECUTION_FAILURE:
                tool["error"] = result["error"]
                tool["attributes"][ERROR_TYPE] = "tool_error"
        elif variant in _NOTED:
            name = Variant(variant).short_name
            root["events"].append({"name": name, "time": at, "attributes": body})
        elif variant in _ENDS:
            for span in spans:
                _close(span, at)
            run["ended"] = True
            if variant == Variant.RUN_COMPLETED:
                reasons = [_finish_reason(body["finish_reason"])]
                root["attributes"][FINISH_REASONS] = reasons
                if chat is not None:
                    chat["attributes"][FINISH_REASONS] = reasons
            elif variant == Variant.RUN_FAILED:
                root["error"] = body["error"]
                root["attributes"][ERROR_TYPE] = "RunFailed"
            else:
                root["attributes"]["behest.cancelled"] = True
        return run

    def encode_state(self, state: OtelRun) -> bytes:
        return orjson.dumps(state)

    def decode_state(self, data: bytes) -> OtelRun:
        run: OtelRun = orjson.loads(data)
        return run

    def index_keys(self, state: OtelRun) -> Iterable[bytes]:
        return ()


def run_spans(state: OtelRun, resource: Any = None) -> list[Any]:
    """The run's spans as OpenTelemetry SDK `ReadableSpan`s (spans still open end at the
    last event seen), ready for any `SpanExporter`."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    trace_id = uuid.UUID(state["run_id"]).int
    spans: list[Span] = state["spans"]
    last = max((s["end"] or s["start"]) for s in spans) if spans else 0
    scope = InstrumentationScope("behest.projections.otel", schema_url=SCHEMA_URL)
    resource = resource or Resource.create({"service.name": "behest"})

    def context(span_id: str) -> SpanContext:
        return SpanContext(trace_id, int(span_id, 16), False, TraceFlags(TraceFlags.SAMPLED))

    made = []
    for span in spans:
        status = Status(StatusCode.ERROR, span["error"]) if span["error"] is not None else Status()
        attributes = {
            k: tuple(v) if isinstance(v, list) else v for k, v in span["attributes"].items()
        }
        made.append(
            ReadableSpan(
                name=span["name"],
                context=context(span["id"]),
                parent=context(span["parent"]) if span["parent"] else None,
                resource=resource,
                attributes=attributes,
                events=[
                    Event(e["name"], _flat(e["attributes"]), e["time"] * 1000)
                    for e in span["events"]
                ],
                # a model call goes out to a provider; the run and its tools run here
                kind=SpanKind.CLIENT if span["name"].startswith("chat ") else SpanKind.INTERNAL,
                status=status,
                start_time=span["start"] * 1000,
                end_time=(span["end"] if span["end"] is not None else last) * 1000,
                instrumentation_scope=scope,
            )
        )
    return made


def _flat(values: Mapping[str, Any]) -> dict[str, Any]:
    """Span event attributes must be primitives: anything else as its JSON text."""
    return {
        k: v if isinstance(v, str | int | float | bool) else orjson.dumps(v).decode()
        for k, v in values.items()
    }


def export_runs(states: Iterable[OtelRun], exporter: Any, resource: Any = None) -> int:
    """Export every finished run of `states` through `exporter`; how many were exported."""
    spans: list[Any] = []
    count = 0
    for state in states:
        if state["ended"]:
            spans.extend(run_spans(state, resource))
            count += 1
    if spans:
        exporter.export(spans)
    return count
