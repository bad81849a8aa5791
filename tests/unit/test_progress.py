"""What a projector reports: lag in seconds as defined, the batch latency histogram, and
the bookkeeping its consume loop does through `Progress`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from behest.fold.engine import BatchResult
from behest.fold.progress import BATCH_BUCKETS, BatchLatency, LagClock, Progress, ProjectorMetrics


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


def test_progress_counts_batches_and_measures_lag_of_the_owned_partitions_only() -> None:
    progress = Progress("run_state", "group", "topic", "instance-1")
    progress.assigned([1, 0], {0: 5}, rebalance=True)
    progress.batch(BatchResult(records=4, folded=3, positions={0: 9, 1: 2}), 0.01, {0: 40.0})
    progress.measure_lag({0: 10, 1: 2, 2: 99}.__getitem__)
    metrics = progress.copy()
    assert (metrics.assigned, metrics.assignments) == ((0, 1), 1)
    assert (metrics.records, metrics.events_folded, metrics.batches) == (4, 3, 1)
    assert metrics.positions == {0: 9, 1: 2} and progress.position(0) == 9
    assert metrics.lag == {0: 1, 1: 0}  # partition 2 is not ours
    assert metrics.lag_seconds[1] == 0.0 and metrics.lag_seconds[0] > 0
    assert progress.behind({0: 10, 1: 2}) == [0]
    beat = progress.heartbeat(100.0, 50.0)
    assert (beat.instance, beat.assigned, beat.lag, beat.stopped) == (
        "instance-1",
        (0, 1),
        {0: 1, 1: 0},
        False,
    )


def test_a_revocation_clears_what_was_known_of_the_partitions_and_is_counted() -> None:
    progress = Progress("run_state", "group", "topic", None)
    progress.assigned([0], {}, rebalance=True)
    progress.batch(BatchResult(positions={0: 3}), 0.01, {0: 40.0})
    progress.measure_lag(lambda _: 5)
    progress.revoked([0], lost=True)
    metrics = progress.copy()
    assert (metrics.assigned, metrics.lag, metrics.losses, metrics.revocations) == ((), {}, 1, 0)
    assert progress.behind({0: 10}) is None  # nothing owned: never caught up
    progress.assigned([0], {}, rebalance=True)
    progress.measure_lag(lambda _: 5)
    assert progress.copy().lag_seconds == {}  # the fold time of before is forgotten


def test_a_restart_starts_every_counter_over_but_keeps_who_reports() -> None:
    progress = Progress("run_state", "group", "topic", "instance-1")
    progress.writing(2, building=True, fresh=False)
    progress.batch(BatchResult(records=1, positions={0: 1}), 0.01, {})
    progress.restart()
    metrics = progress.copy()
    assert (metrics.records, metrics.positions, metrics.generation) == (0, {}, None)
    assert (metrics.projection, metrics.instance_id) == ("run_state", "instance-1")
    progress.writing(3, building=True, fresh=True)
    assert progress.building
    progress.built()
    assert not progress.building
