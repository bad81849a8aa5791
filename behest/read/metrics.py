"""Prometheus metrics of the query server, in a registry of its own.

A registry per app (not the process-wide default) so that several apps, e.g. in tests,
never collide on metric names. Request latencies are observed as they happen; how fresh
the store is, and the projector's progress when one runs in the same process, are read
at scrape time, so a scrape always shows the current figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Final, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from behest.read.reader import Freshness

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "MetricsSource",
    "ProjectorStats",
    "QueryMetrics",
]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

LATENCY_BUCKETS: Final = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Seconds; fine below 5 ms, where a state read over HTTP should land."""


class ProjectorStats(Protocol):
    """What `/metrics` reports of a projector (`behest.fold.projector.ProjectorMetrics` fits)."""

    @property
    def topic(self) -> str: ...

    @property
    def lag(self) -> Mapping[int, int]: ...

    @property
    def events_folded(self) -> int: ...

    @property
    def duplicates(self) -> int: ...

    @property
    def gaps(self) -> int: ...

    @property
    def dead_letters(self) -> int: ...


class FreshnessSource(Protocol):
    """What says how fresh answers are (a `ProjectionReader` or a `RunStateQuery`)."""

    def freshness(self) -> Freshness: ...


MetricsSource = Callable[[], ProjectorStats]
"""A projector's current stats, e.g. `lambda: projector.metrics`."""


class _StoreCollector(Collector):
    """Freshness of the query's view, and the projector's progress if a source is given."""

    def __init__(self, query: FreshnessSource, source: MetricsSource | None) -> None:
        self.query = query
        self.source = source

    def collect(self) -> Iterator[Metric]:
        fresh = self.query.freshness()
        folded = GaugeMetricFamily(
            "behest_query_folded_offset",
            "Next offset per partition that the queried store has folded.",
            labels=["topic", "partition"],
        )
        for partition, offset in sorted(fresh.offsets.items()):
            folded.add_metric([fresh.topic, str(partition)], offset)
        yield folded
        yield GaugeMetricFamily(
            "behest_query_sync_age_seconds",
            "Seconds since the query's view last synced with the projector's writes.",
            value=max(time.time() - fresh.synced_at.timestamp(), 0.0),
        )
        yield GaugeMetricFamily(
            "behest_query_max_staleness_seconds",
            "Longest an answer may lag behind the projector's writes.",
            value=fresh.max_staleness,
        )
        if self.source is None:
            return
        stats = self.source()
        lag = GaugeMetricFamily(
            "behest_projector_lag",
            "Records in the log beyond what the projector has folded, per partition.",
            labels=["topic", "partition"],
        )
        for partition, records in sorted(stats.lag.items()):
            lag.add_metric([stats.topic, str(partition)], records)
        yield lag
        for name, help_text, value in (
            ("events_folded", "Events folded into states.", stats.events_folded),
            ("duplicates", "Events skipped as already folded.", stats.duplicates),
            ("gaps", "Missing sequence ranges folded past.", stats.gaps),
            ("dead_letters", "Records sent to the dead-letter topic.", stats.dead_letters),
        ):
            yield CounterMetricFamily(f"behest_projector_{name}", help_text, value=value)


class QueryMetrics:
    """The query server's metrics: latency per route, freshness, projector progress."""

    def __init__(self, query: FreshnessSource, source: MetricsSource | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "behest_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], Histogram] = {}
        self.registry.register(_StoreCollector(query, source))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:  # `labels()` costs more than `observe()`: look each up once
            child = self._children[key] = self.latency.labels(method, route, str(status))
        child.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
