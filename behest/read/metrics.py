"""Prometheus metrics of the query server and of the projector, each in a registry of its own.

A registry per app (not the process-wide default) so that several apps, e.g. in tests,
never collide on metric names. Request and batch latencies are observed as they happen;
everything else (freshness, the projector's counters and lag, its heartbeat) is read at
scrape time, so a scrape always shows the current figures.

`behest project --metrics-port N` serves `projector_families` (`ProjectorExporter`);
`behest serve`'s `/metrics` adds the projector's liveness and lag from its heartbeat file
(`heartbeat_families`), or, with the projector in the same process, its full figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from behest.fold.progress import ProjectorMetrics
from behest.read.health import ProjectorHealth, ProjectorWatch
from behest.read.reader import Freshness

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "MetricsSource",
    "ProjectorExporter",
    "QueryMetrics",
    "heartbeat_families",
    "projector_families",
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


MetricsSource = Callable[[], ProjectorMetrics]
"""A projector's current figures, e.g. `lambda: projector.metrics`."""


def projector_families(stats: ProjectorMetrics) -> Iterator[Metric]:
    """Every metric of a projector, from one copy of its figures.

    Lag per owned partition in records (`behest_projector_lag_records`) and in seconds
    (`behest_projector_lag_seconds`: how long ago the partition's folded state was last
    known complete, 0 when caught up; see `behest.fold.progress`).
    """
    topic, labels = stats.topic, ["topic", "partition"]
    for name, help_text, values in (
        (
            "lag_records",
            "Records on the log beyond what is folded, per owned partition.",
            stats.lag,
        ),
        (
            "lag_seconds",
            "Seconds since the partition's folded state was last known complete (0: caught up).",
            stats.lag_seconds,
        ),
        ("folded_offset", "Next offset to fold, per partition this store holds.", stats.positions),
    ):
        family = GaugeMetricFamily(f"behest_projector_{name}", help_text, labels=labels)
        for partition, value in sorted(values.items()):
            family.add_metric([topic, str(partition)], value)
        yield family
    yield GaugeMetricFamily(
        "behest_projector_assigned_partitions",
        "Partitions this projector owns now.",
        value=len(stats.assigned),
    )
    for name, help_text, value in (
        ("records", "Records read from the log.", stats.records),
        ("events_folded", "Events folded into states.", stats.events_folded),
        ("duplicates", "Events skipped as already folded.", stats.duplicates),
        ("gaps", "Missing sequence ranges folded past.", stats.gaps),
        ("late_repaired", "Late events folded in place (the run re-folded).", stats.late_repaired),
        ("dead_letters", "Records sent to the dead-letter topic.", stats.dead_letters),
        ("tombstones", "Tombstones that deleted a run.", stats.tombstones),
        ("batches", "Batches folded and written.", stats.batches),
    ):
        yield CounterMetricFamily(f"behest_projector_{name}", help_text, value=value)
    rebalances = CounterMetricFamily(
        "behest_projector_rebalances",
        "Rebalances this member saw: partitions assigned, revoked, or lost (session expired).",
        labels=["event"],
    )
    rebalances.add_metric(["assigned"], stats.assignments)
    rebalances.add_metric(["revoked"], stats.revocations)
    rebalances.add_metric(["lost"], stats.losses)
    yield rebalances
    yield HistogramMetricFamily(
        "behest_projector_batch_duration_seconds",
        "Time to fold a batch and write it to RocksDB (dead letters included).",
        buckets=stats.batch_latency.cumulative(),
        sum_value=stats.batch_latency.total,
    )


def heartbeat_families(health: ProjectorHealth, topic: str, *, lag: bool) -> Iterator[Metric]:
    """What a reader in another process knows of the projector, from its heartbeat; its
    lag figures too when `lag` (none are known otherwise)."""
    yield GaugeMetricFamily(
        "behest_projector_up",
        "1 if the projector writing this store beat within the staleness bound.",
        value=int(health.alive),
    )
    yield GaugeMetricFamily("behest_ready", "1 if /readyz answers 200.", value=int(health.ready))
    if health.age is not None:
        yield GaugeMetricFamily(
            "behest_projector_heartbeat_age_seconds",
            "Seconds since the projector's last heartbeat.",
            value=health.age,
        )
    beat = health.heartbeat
    if not lag or beat is None or not health.alive:  # a dead projector's lag is no figure
        return
    for name, help_text, values in (
        ("lag_records", "Records on the log beyond what is folded (heartbeat).", beat.lag),
        ("lag_seconds", "Seconds behind the log, per partition (heartbeat).", beat.lag_seconds),
    ):
        family = GaugeMetricFamily(
            f"behest_projector_{name}", help_text, labels=["topic", "partition"]
        )
        for partition, value in sorted(values.items()):
            family.add_metric([topic, str(partition)], value)
        yield family


class FreshnessSource(Protocol):
    """What says how fresh answers are (a `ProjectionReader` or a `RunStateQuery`)."""

    def freshness(self) -> Freshness: ...


class _StoreCollector(Collector):
    """Freshness of the query's view; the projector's figures from an in-process source,
    and its liveness and (without a source) lag from its heartbeat."""

    def __init__(
        self, query: FreshnessSource, source: MetricsSource | None, watch: ProjectorWatch | None
    ) -> None:
        self.query = query
        self.source = source
        self.watch = watch

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
        if self.watch is not None:
            yield from heartbeat_families(self.watch.check(), fresh.topic, lag=self.source is None)
        if self.source is not None:
            yield from projector_families(self.source())


class _ProjectorCollector(Collector):
    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        return projector_families(self.source())


class ProjectorExporter:
    """`behest project --metrics-port`: a projector's metrics over HTTP, on a thread.

    `port=0` picks a free port; `url` says which. prometheus_client's own small server:
    a projector has no web framework to share.
    """

    def __init__(self, source: MetricsSource, host: str = "127.0.0.1", port: int = 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ProjectorCollector(source))
        self._server, self._thread = start_http_server(port, host, self.registry)
        self.host, self.port = host, int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class QueryMetrics:
    """The query server's metrics: latency per route, freshness, projector progress."""

    def __init__(
        self,
        query: FreshnessSource,
        source: MetricsSource | None = None,
        watch: ProjectorWatch | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "behest_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], Histogram] = {}
        self.registry.register(_StoreCollector(query, source, watch))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:  # `labels()` costs more than `observe()`: look each up once
            child = self._children[key] = self.latency.labels(method, route, str(status))
        child.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
