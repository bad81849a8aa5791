"""The otel projection: a run's GenAI spans carry what its RunState says (tokens, finish
reason, error, model, session), exported through the OpenTelemetry SDK's in-memory
exporter; the fold is pure and its ids stable."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from behest.codec import decode_record, encode
from behest.events import AgentEvent, RunState, RunStatus
from behest.fold.projection import fold
from behest.projections.otel import SEMCONV_VERSION, OtelProjection, export_runs, run_spans
from behest.projections.run_state import RunStateProjection, to_json_dict
from behest.testing import run_projection, sample_run
from tests.unit.strategies import run_histories

OTEL, RUN_STATE = OtelProjection(), RunStateProjection()


def exported(events: list[AgentEvent]) -> list:  # type: ignore[type-arg]
    """Fold `events` with the real engine on a real RocksDB, export the run's spans."""
    (state,) = run_projection(OTEL, events).values()
    exporter = InMemorySpanExporter()
    export_runs([state], exporter)
    return list(exporter.get_finished_spans())


@pytest.mark.parametrize("seed", range(12))
def test_spans_carry_what_the_run_state_says(seed: int) -> None:
    events = sample_run(uuid.uuid4(), events=40, seed=seed)
    data = run_projection(RUN_STATE, events)[events[0].run_id.bytes]
    state = RunState.model_validate(to_json_dict(data))
    spans = exported(events)

    (root,) = [s for s in spans if s.parent is None]
    chats = [s for s in spans if s.attributes["gen_ai.operation.name"] == "chat"]
    tools = [s for s in spans if s.attributes["gen_ai.operation.name"] == "execute_tool"]
    assert (
        root.name == "invoke_agent" and root.attributes["gen_ai.operation.name"] == "invoke_agent"
    )
    assert root.context.trace_id == state.run_id.int
    assert root.attributes["gen_ai.provider.name"] == state.provider
    assert root.attributes["gen_ai.request.model"] == state.model
    assert root.attributes["gen_ai.conversation.id"] == str(state.session_id)
    usage = state.total_usage
    assert root.attributes["gen_ai.usage.input_tokens"] == usage.input_tokens
    assert root.attributes["gen_ai.usage.output_tokens"] == usage.output_tokens
    assert (
        sum(c.attributes.get("gen_ai.usage.input_tokens", 0) for c in chats) == usage.input_tokens
    )
    assert len(chats) == state.iteration
    assert all(
        c.kind is SpanKind.CLIENT and c.parent.span_id == root.context.span_id for c in chats
    )
    assert root.start_time == int(state.created_at.timestamp() * 1_000_000) * 1000
    assert root.end_time == int(state.updated_at.timestamp() * 1_000_000) * 1000
    finished = [e.payload for e in events if e.type == "ToolExecutionFinished"]
    assert [t.attributes["gen_ai.tool.call.id"] for t in tools] == [p.call_id for p in finished]
    for tool, payload in zip(tools, finished, strict=True):
        failed = hasattr(payload.result, "error")
        assert (tool.status.status_code is StatusCode.ERROR) is failed
        assert (tool.attributes.get("error.type") == "tool_error") is failed
    if state.status is RunStatus.COMPLETED:
        assert root.attributes["gen_ai.response.finish_reasons"] == (state.last_finish.value,)
        assert root.status.status_code is StatusCode.UNSET
    elif state.status is RunStatus.FAILED:
        assert root.status.status_code is StatusCode.ERROR
        assert root.status.description == state.last_error
        assert root.attributes["error.type"] == "RunFailed"
    assert all(s.instrumentation_scope.schema_url.endswith(SEMCONV_VERSION) for s in spans)


def test_a_run_in_progress_is_not_exported_until_it_ends() -> None:
    events = sample_run(uuid.uuid4(), events=30, seed=1)
    (state,) = run_projection(OTEL, events[:-1]).values()
    exporter = InMemorySpanExporter()
    assert export_runs([state], exporter) == 0
    assert exporter.get_finished_spans() == ()
    assert run_spans(state)  # still readable, open spans ending at the last event


@settings(max_examples=30, deadline=None)
@given(run_histories())
def test_the_fold_is_pure_and_ids_are_stable(events: list[AgentEvent]) -> None:
    records = [decode_record(encode(e)) for e in events]
    first = fold(OTEL, records)
    halfway = fold(OTEL, records[: len(records) // 2])
    again = fold(OTEL, records[len(records) // 2 :], halfway)
    assert again == first  # folding in two batches (stored and reloaded) changes nothing
    assert fold(OTEL, records) == first
