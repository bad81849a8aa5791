"""What a projector reports of itself: counters, lag in records and in seconds, batch latency.

Plain data and arithmetic, no Kafka: the `Projector` feeds it, `/metrics`, the heartbeat
and the CLI's live line read copies of it.

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
from dataclasses import dataclass, field, replace
from typing import Final

__all__ = ["BATCH_BUCKETS", "BatchLatency", "LagClock", "ProjectorMetrics"]

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
