"""Trace context across Kafka: a span around `emit` (either producer) is linked from the
projector's span for the batch that folds the event; the records carry `traceparent`."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer
from opentelemetry import trace

from behest.config import Settings
from behest.emit.aio import AsyncEventProducer
from behest.emit.producer import EventProducer
from behest.fold.engine import BatchResult
from behest.fold.projector import Projector
from behest.testing import sample_run
from tests.otel import memory_exporter


async def test_emit_spans_are_linked_from_the_projector_span(
    settings: Settings, unique_group: str
) -> None:
    exporter = memory_exporter()
    tracer = trace.get_tracer("agent-service")
    sync_run, async_run = sample_run(events=5, seed=1), sample_run(events=5, seed=2)
    with (
        tracer.start_as_current_span("agent turn (sync)") as sync_span,
        EventProducer(settings) as producer,
    ):
        producer.emit(sync_run[0]).result(30)
        producer.emit_many(sync_run[1:]).result(30)
    async with AsyncEventProducer(settings) as aio:
        with tracer.start_as_current_span("agent turn (async)") as async_span:
            await aio.emit_many(async_run)
    untraced = sample_run(events=3, seed=3)
    with EventProducer(settings) as producer:  # outside any span: no headers, no link
        producer.emit_many(untraced).result(30)

    with Projector(settings, group_id=unique_group) as projector:
        metrics = projector.run(until_caught_up=True)
    traced = len(sync_run) + len(async_run)
    assert metrics.events_folded == traced + len(untraced)

    batches = [s for s in exporter.get_finished_spans() if s.name == f"process {settings.topic}"]
    assert batches, "the projector made no span"
    assert all(s.kind is trace.SpanKind.CONSUMER for s in batches)
    counts = [s.attributes["messaging.batch.message_count"] for s in batches if s.attributes]
    assert sum(counts) == traced + len(untraced)
    linked = [(link.context.trace_id, link.context.span_id) for s in batches for link in s.links]
    producers = [sync_span.get_span_context(), async_span.get_span_context()]
    # one link per traced event, to the span it was emitted in; the untraced ones: none
    assert sorted(linked) == sorted(
        [(producers[0].trace_id, producers[0].span_id)] * len(sync_run)
        + [(producers[1].trace_id, producers[1].span_id)] * len(async_run)
    )


def test_records_carry_w3c_traceparent(settings: Settings) -> None:
    memory_exporter()
    with (
        trace.get_tracer("agent-service").start_as_current_span("turn") as span,
        EventProducer(settings) as producer,
    ):
        producer.emit(sample_run(events=1, seed=4)[0]).result(30)
    consumer = Consumer(
        settings.librdkafka(
            **{"group.id": f"g-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([settings.topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None
        headers = dict(message.headers() or [])
    finally:
        consumer.close()
    context = span.get_span_context()
    flags = int(context.trace_flags)
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    assert headers["traceparent"] == expected.encode()


def test_otel_projection_exports_finished_runs_from_the_projector(
    settings: Settings, unique_group: str
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from behest.projections.otel import OtelProjection, export_runs

    finished, running = sample_run(events=30, seed=6), sample_run(events=30, seed=7)[:-1]
    with EventProducer(settings) as producer:
        producer.emit_many(finished + running).result(30)
    exporter = InMemorySpanExporter()

    def export(result: BatchResult) -> None:  # what `behest project --projection otel` does
        export_runs(result.states.values(), exporter)

    with Projector(settings, OtelProjection(), group_id=unique_group, on_batch=export) as projector:
        projector.run(until_caught_up=True)

    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {finished[0].run_id.int}  # not the open run
    (root,) = [s for s in spans if s.parent is None]
    usage = [e.payload.usage for e in finished if e.type == "UsageRecorded"]
    assert root.attributes is not None
    assert root.attributes["gen_ai.usage.input_tokens"] == sum(u.input_tokens for u in usage)
    assert root.attributes["gen_ai.usage.output_tokens"] == sum(u.output_tokens for u in usage)
