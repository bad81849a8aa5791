"""What a projector reports of itself: counters, lag in records and in seconds, batch latency.

No Kafka: the `Projector`'s consume loop feeds its `Progress` (once per batch, poll and
rebalance, never once per event); `/metrics`, the heartbeat and the CLI's live line read
copies of its `ProjectorMetrics`.

Lag in seconds, per owned partition, is how long ago the partition's folded state was
last known to be complete: 0 while the partition is caught up (nothing on the log beyond
what is folded), else `now - max(T_fold, T_caught_up)`, where `T_fold` is the Kafka
timestamp of the last record folded from it and `T_caught_up` the last moment it was
seen caught up. Every event missing from the state was appended after that moment, so a
read is at most that many seconds behind the log; and a partition idle for an hour that
receives one record reads about the time that record waits, not an hour.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from behest.fold.heartbeat import Heartbeat

if TYPE_CHECKING:
    from behest.fold.engine import BatchResult

__all__ = ["BATCH_BUCKETS", "BatchLatency", "LagClock", "Progress", "ProjectorMetrics"]

BATCH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the batch latency histogram: a 2000-record batch takes ~30 ms."""


@dataclass(slots=True)
class BatchLatency:
    """A histogram of batch fold-and-write times (not cumulative; `+Inf` last)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BATCH_BUCKETS, seconds)] += 1
        self.total += seconds

    def copy(self) -> BatchLatency:
        return BatchLatency(list(self.counts), self.total)

    def cumulative(self) -> list[tuple[str, int]]:
        """`(upper bound, count at or below it)` pairs, as Prometheus exposes them."""
        pairs, running = [], 0
        for bound, count in zip([*map(str, BATCH_BUCKETS), "+Inf"], self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


@dataclass(slots=True)
class ProjectorMetrics:
    """Counters and positions of a Projector, for `/metrics`, the heartbeat and the CLI.

    `positions` are the next offsets folded per partition (what RocksDB holds); `lag` is
    the partition's high watermark minus that, for the partitions this instance owns;
    `lag_seconds` as the module says (absent while unknown). `assignments`,
    `revocations` and `losses` count the group's rebalances as this member saw them.
    """

    projection: str
    group_id: str
    topic: str
    instance_id: str | None = None
    records: int = 0
    events_folded: int = 0
    duplicates: int = 0
    gaps: int = 0
    late_repaired: int = 0
    dead_letters: int = 0
    tombstones: int = 0
    batches: int = 0
    assignments: int = 0
    revocations: int = 0
    losses: int = 0
    last_batch_at: float | None = None
    last_batch_seconds: float = 0.0
    batch_latency: BatchLatency = field(default_factory=BatchLatency)
    assigned: tuple[int, ...] = ()
    generation: int | None = None
    """The generation written (`behest generations list`)."""
    building: bool = False
    """True while it builds a generation beside the served one (readers are not on it yet)."""
    positions: dict[int, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)
    lag_seconds: dict[int, float] = field(default_factory=dict)

    @property
    def total_lag(self) -> int:
        """Records the owned partitions hold beyond what is folded."""
        return sum(self.lag.values())

    def copy(self) -> ProjectorMetrics:
        """A copy that later updates of this one do not reach."""
        return replace(
            self,
            positions=dict(self.positions),
            lag=dict(self.lag),
            lag_seconds=dict(self.lag_seconds),
            batch_latency=self.batch_latency.copy(),
        )


class LagClock:
    """Per partition, when its folded state was last known complete (module docstring)."""

    def __init__(self) -> None:
        self._folded_at: dict[int, float] = {}
        self._caught_up_at: dict[int, float] = {}

    def folded(self, partition: int, timestamp: float) -> None:
        """The last record folded from `partition` was appended at `timestamp` (Unix s)."""
        self._folded_at[partition] = timestamp

    def forget(self, partition: int) -> None:
        """The partition went away (a rebalance): what we knew of it no longer holds."""
        self._folded_at.pop(partition, None)
        self._caught_up_at.pop(partition, None)

    def seconds(self, partition: int, lag: int, now: float) -> float | None:
        """Lag of `partition` in seconds, given its lag in records; None if unknown."""
        if lag <= 0:
            self._caught_up_at[partition] = now
            return 0.0
        known = max(self._folded_at.get(partition, -1.0), self._caught_up_at.get(partition, -1.0))
        return None if known < 0 else max(now - known, 0.0)


class Progress:
    """A projector's metrics and lag clock behind one lock: its consume loop reports each
    batch, poll and rebalance here; other threads (`/metrics`, readers waiting for their
    writes) read copies."""

    def __init__(self, projection: str, group_id: str, topic: str, instance_id: str | None) -> None:
        self._lock = threading.Lock()
        self._metrics = ProjectorMetrics(projection, group_id, topic, instance_id)
        self._clock = LagClock()

    def copy(self) -> ProjectorMetrics:
        """A consistent copy of the metrics."""
        with self._lock:
            return self._metrics.copy()

    def position(self, partition: int) -> int:
        """Next offset of `partition` folded (0: nothing yet)."""
        with self._lock:
            return self._metrics.positions.get(partition, 0)

    @property
    def building(self) -> bool:
        """Whether the generation written is being built beside the served one."""
        return self._metrics.building

    def restart(self) -> None:
        """Every counter from zero (a rebuild reports on the new generation only)."""
        with self._lock:
            m = self._metrics
            self._metrics = ProjectorMetrics(m.projection, m.group_id, m.topic, m.instance_id)
            self._clock = LagClock()

    def writing(self, generation: int, *, building: bool, fresh: bool) -> None:
        """The generation written from now on; a fresh one has folded nothing yet."""
        with self._lock:
            if fresh:
                self._metrics.positions = {}
            self._metrics.generation = generation
            self._metrics.building = building

    def built(self) -> None:
        """The generation built is served now."""
        with self._lock:
            self._metrics.building = False

    def assigned(
        self, partitions: Iterable[int], stored: dict[int, int], *, rebalance: bool
    ) -> None:
        """The partitions folded from now on, with the positions their stores hold;
        `rebalance`: the group gave them (counted in `assignments`)."""
        with self._lock:
            self._metrics.assigned = tuple(sorted(partitions))
            self._metrics.positions.update(stored)
            if rebalance:
                self._metrics.assignments += 1

    def revoked(self, partitions: Iterable[int], *, lost: bool) -> None:
        """The group took the partitions away, eagerly: all of them (`lost`: without asking,
        the session expired)."""
        with self._lock:
            self._metrics.assigned = ()
            self._metrics.lag.clear()
            self._metrics.lag_seconds.clear()
            if lost:
                self._metrics.losses += 1
            else:
                self._metrics.revocations += 1
            for partition in partitions:
                self._clock.forget(partition)

    def left(self) -> None:
        """The projector left the group: it owns nothing now."""
        with self._lock:
            self._metrics.assigned = ()

    def batch(self, result: BatchResult, seconds: float, folded_at: dict[int, float]) -> None:
        """A batch was written in `seconds`; `folded_at`: per partition, the log time (Unix
        s) of the last record it folded there."""
        with self._lock:
            m = self._metrics
            m.records += result.records
            m.events_folded += result.folded
            m.duplicates += result.duplicates
            m.gaps += result.gaps
            m.late_repaired += result.late_repaired
            m.dead_letters += len(result.dead_letters)
            m.tombstones += result.tombstones
            m.batches += 1
            m.last_batch_at = time.time()
            m.last_batch_seconds = seconds
            m.batch_latency.observe(seconds)
            m.positions.update(result.positions)
            for partition, timestamp in folded_at.items():
                self._clock.folded(partition, timestamp)

    def measure_lag(self, high_watermark: Callable[[int], int]) -> None:
        """Lag of the owned partitions, in records from `high_watermark(partition)` (-1:
        unknown) and in seconds from the lag clock."""
        now = time.time()
        with self._lock:
            positions = self._metrics.positions
            lag: dict[int, int] = {}
            seconds: dict[int, float] = {}
            for partition in self._metrics.assigned:
                high = high_watermark(partition)
                if high >= 0:
                    lag[partition] = max(high - positions.get(partition, 0), 0)
                    behind = self._clock.seconds(partition, lag[partition], now)
                    if behind is not None:
                        seconds[partition] = behind
            self._metrics.lag = lag
            self._metrics.lag_seconds = seconds

    def behind(self, targets: dict[int, int]) -> list[int] | None:
        """The owned partitions not folded up to their target (None: none owned)."""
        with self._lock:
            if not self._metrics.assigned:
                return None
            positions = self._metrics.positions
            return [p for p in self._metrics.assigned if positions.get(p, 0) < targets.get(p, 0)]

    def heartbeat(self, now: float, started_at: float, *, stopped: bool = False) -> Heartbeat:
        """The projector's heartbeat as of `now` (`behest.fold.heartbeat`)."""
        with self._lock:
            m = self._metrics
            return Heartbeat(
                projection=m.projection,
                pid=os.getpid(),
                at=now,
                started_at=started_at,
                instance=m.instance_id,
                stopped=stopped,
                assigned=m.assigned,
                lag=dict(m.lag),
                lag_seconds=dict(m.lag_seconds),
            )
