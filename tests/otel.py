"""One OpenTelemetry SDK provider for the test process, exporting to memory.

OpenTelemetry lets a process set its global tracer provider once, so every test that looks
at spans shares this one and clears the exporter first.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_EXPORTER = InMemorySpanExporter()


def memory_exporter() -> InMemorySpanExporter:
    """The process's in-memory span exporter, emptied (installing the provider once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER
