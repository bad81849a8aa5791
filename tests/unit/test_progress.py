"""What a projector reports: lag in seconds as defined, and the batch latency histogram."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from behest.fold.progress import BATCH_BUCKETS, BatchLatency, LagClock, ProjectorMetrics


def test_lag_seconds_is_zero_when_caught_up_and_unknown_before_any_fold() -> None:
    clock = LagClock()
    assert clock.seconds(0, 0, now=100.0) == 0.0
    fresh = LagClock()
    assert fresh.seconds(0, 5, now=100.0) is None  # behind, nothing folded yet: unknown


def test_lag_seconds_counts_from_the_last_folded_record() -> None:
    clock = LagClock()
    clock.folded(0, 40.0)  # a backlog: the last record folded was appended at t=40
    assert clock.seconds(0, 1000, now=100.0) == 60.0
    clock.folded(0, 90.0)
    assert clock.seconds(0, 10, now=100.0) == 10.0


def test_an_idle_partition_that_gets_one_record_is_not_an_hour_behind() -> None:
    clock = LagClock()
    clock.folded(0, 0.0)  # the last record an hour ago
    assert clock.seconds(0, 0, now=3600.0) == 0.0  # caught up, seen at t=3600
    assert clock.seconds(0, 1, now=3600.5) == 0.5  # one new record: half a second behind


def test_a_partition_that_moved_away_is_forgotten() -> None:
    clock = LagClock()
    clock.folded(1, 10.0)
    clock.seconds(1, 0, now=20.0)
    clock.forget(1)
    assert clock.seconds(1, 3, now=30.0) is None


def test_lag_seconds_never_goes_below_zero_on_a_clock_ahead_of_ours() -> None:
    clock = LagClock()
    clock.folded(0, 200.0)  # a producer whose clock runs ahead
    assert clock.seconds(0, 1, now=100.0) == 0.0


@given(st.lists(st.floats(min_value=0.0, max_value=20.0, allow_nan=False), max_size=50))
def test_the_histogram_is_cumulative_and_counts_every_observation(values: list[float]) -> None:
    latency = BatchLatency()
    for value in values:
        latency.observe(value)
    pairs = latency.cumulative()
    assert [bound for bound, _ in pairs] == [*map(str, BATCH_BUCKETS), "+Inf"]
    counts = [count for _, count in pairs]
    assert counts == sorted(counts) and counts[-1] == len(values)
    for (bound, count), limit in zip(pairs, BATCH_BUCKETS, strict=False):
        assert count == sum(v <= limit for v in values), bound
    assert abs(latency.total - sum(values)) < 1e-6


def test_a_copy_of_the_metrics_does_not_move_with_them() -> None:
    metrics = ProjectorMetrics("run_state", "group", "topic")
    copy = metrics.copy()
    metrics.lag[0] = 3
    metrics.lag_seconds[0] = 1.0
    metrics.batch_latency.observe(0.1)
    assert copy.lag == {} and copy.lag_seconds == {}
    assert copy.batch_latency.cumulative()[-1][1] == 0
