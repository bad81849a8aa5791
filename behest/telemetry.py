"""OpenTelemetry across Kafka: W3C trace context in record headers, spans that link to it.

    emit (inside a span) ─► record headers `traceparent` (+ `tracestate`, baggage)
    projector batch span "process <topic>" ─► one link per record that carried a context

`opentelemetry-api` is a light optional dependency (`behest[otel]` adds the SDK and the
OTLP exporter): without it, or without an SDK configured, every function here is a
no-op that costs a context look-up per emit call and per projector batch, not per event.

`configure(service)` is what behest's own commands call when `BEHEST_OTEL=true`: an SDK
tracer provider exporting over OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (the standard
OTel variables apply). A service that configures OpenTelemetry itself needs nothing here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Final, Protocol

from behest.errors import ConfigError

try:
    from opentelemetry import propagate, trace
    from opentelemetry.context import get_current as _current_context
except ImportError:  # pragma: no cover - the API is installed with behest[server] and [otel]
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

__all__ = ["MAX_LINKS", "configure", "fold_span", "trace_headers"]

MAX_LINKS: Final = 128
"""Links per batch span: the OTel SDK's default span limit; later records are counted only."""

_TRACER_NAME: Final = "behest"


class _Headers(Protocol):
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...


def trace_headers() -> list[tuple[str, str | bytes | None]] | None:
    """The current trace context as Kafka record headers, or None outside any span."""
    if propagate is None or not _current_context():
        return None  # no span, no baggage: skip the propagators (a tenth of the cost)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return None
    return [(name, value.encode()) for name, value in carrier.items()]


def _context_of(headers: list[tuple[str, bytes | None]]) -> Any:
    """The remote span context a record's headers carry (invalid if none)."""
    carrier = {
        name: value.decode(errors="replace")
        for name, value in headers
        if value is not None and name in ("traceparent", "tracestate")
    }
    if not carrier:
        return None
    span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


@contextlib.contextmanager
def fold_span(records: Sequence[_Headers], topic: str) -> Iterator[None]:
    """A consumer span around one projector batch, linked to the producers' spans of its
    records (messaging semantic conventions: `process <topic>`, batch size)."""
    if trace is None:
        yield
        return
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(
        f"process {topic}", kind=trace.SpanKind.CONSUMER, record_exception=True
    ) as span:
        if span.is_recording():
            linked = 0
            for record in records:
                headers = record.headers()
                context = _context_of(headers) if headers else None
                if context is not None and linked < MAX_LINKS:
                    span.add_link(context)
                    linked += 1
            span.set_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.destination.name": topic,
                    "messaging.batch.message_count": len(records),
                }
            )
        yield


def configure(service: str) -> None:
    """Export this process's spans over OTLP (behest's commands, with `BEHEST_OTEL=true`)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "BEHEST_OTEL=true needs the OpenTelemetry SDK and OTLP exporter: "
            "pip install 'behest[otel]' (or unset BEHEST_OTEL)"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
