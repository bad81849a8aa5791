"""Trace context in record headers and back, and FastAPI's OpenTelemetry by a setting."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from opentelemetry import trace

from behest.config import Settings
from behest.projections.run_state import RunStateProjection
from behest.read.http import create_app
from behest.read.query import RunStateQuery
from behest.telemetry import MAX_LINKS, fold_span, trace_headers
from behest.testing import ProjectionDriver, sample_run
from tests.otel import memory_exporter


class Record:
    def __init__(self, headers: list[tuple[str, bytes | None]] | None) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


def test_no_headers_outside_a_span() -> None:
    memory_exporter()
    assert trace_headers() is None


def test_headers_round_trip_into_links() -> None:
    exporter = memory_exporter()
    with trace.get_tracer("t").start_as_current_span("emit") as emitting:
        headers = trace_headers()
    assert headers is not None and headers[0][0] == "traceparent"
    records = [Record(headers), Record(None), Record([("other", b"x")]), Record(headers)]
    with fold_span(records, "topic"):
        pass
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "process topic"]
    assert [link.context.span_id for link in span.links] == [
        emitting.get_span_context().span_id
    ] * 2
    assert span.attributes is not None and span.attributes["messaging.batch.message_count"] == 4


def test_links_stop_at_the_limit_and_bad_headers_are_ignored() -> None:
    exporter = memory_exporter()
    with trace.get_tracer("t").start_as_current_span("emit"):
        headers = trace_headers()
    assert headers is not None
    garbage = Record([("traceparent", b"not a traceparent"), ("tracestate", None)])
    with fold_span([garbage] + [Record(headers)] * (MAX_LINKS + 5), "topic"):
        pass
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "process topic"]
    assert len(span.links) == MAX_LINKS


async def test_fastapi_spans_only_when_asked(tmp_path: Path) -> None:
    exporter = memory_exporter()
    for telemetry in (False, True):
        run = sample_run(uuid.uuid4(), events=5, seed=1)
        folder = tmp_path / str(telemetry)
        with ProjectionDriver(RunStateProjection(), folder) as driver:
            driver.feed(run)
        with RunStateQuery.open(Settings(state_dir=folder)) as query:
            app = create_app(query, telemetry=telemetry)  # as `behest serve` makes it
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                answer = await client.get(f"/runs/{run[0].run_id}?at_sequence=1")
                assert answer.status_code == 200
        http_spans = [s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
        assert bool(http_spans) is telemetry
    assert any("GET" in s.name for s in http_spans)
