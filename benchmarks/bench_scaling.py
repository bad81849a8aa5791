"""How the projector and `get_at` behave as things grow.

- the log grows (events per run fixed): projector events/s and peak RSS;
- the number of runs grows (events fixed): the same two figures;
- runs grow longer: `get_at` latency, which snapshots bound (a snapshot every
  `DEFAULT_SNAPSHOT_EVERY` events, so at most that many events are folded per query).

Each projector measurement is a fresh process with a fresh state dir folding the whole
topic with `run(until_caught_up=True)`, i.e. a rebuild; its figure's reference is the
smallest size of the same curve, so the ratio shows what growth costs.
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BenchContext,
    Row,
    RunBatch,
    child_main,
    make_row,
    median,
    percentile,
    run_child,
)

MIB = 1024 * 1024

# --- one projector run (in a child process) -----------------------------------------------------


def _project(args: dict[str, Any]) -> dict[str, Any]:
    """Fold the whole topic into a fresh state dir, as `behest project --rebuild` would."""
    from behest.config import Settings
    from behest.fold.projector import Projector
    from behest.projections.run_state import RunStateProjection

    settings = Settings(
        bootstrap_servers=args["bootstrap"], topic=args["topic"], state_dir=Path(args["state_dir"])
    )
    with Projector(settings, RunStateProjection(), group_id=args["group"]) as projector:
        start = time.perf_counter()
        metrics = projector.run(until_caught_up=True)
        elapsed = time.perf_counter() - start
        runs = sum(1 for _ in projector.store.iter_states())
    return {
        "seconds": elapsed,
        "events": metrics.events_folded,
        "runs": runs,
        "records": metrics.records,
        "dead_letters": metrics.dead_letters,
        "duplicates": metrics.duplicates,
        "gaps": metrics.gaps,
    }


@dataclass(frozen=True)
class ProjectorSample:
    """Medians over the repeats of one projector measurement."""

    events: int
    seconds: float
    peak_rss_bytes: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def project_once(
    ctx: BenchContext, topic: str, events: int, runs: int, *, keep: Path | None = None
) -> tuple[float, int]:
    """`(seconds, peak RSS)` of one projector rebuild; checks it folded everything.

    The state dir is deleted afterwards unless `keep` names where to leave it.
    """
    state_dir = keep or ctx.scratch("projector-state")
    args = {
        "bootstrap": ctx.bootstrap,
        "topic": topic,
        "state_dir": str(state_dir),
        "group": ctx.unique("projector"),
    }
    try:
        child = run_child("benchmarks.bench_scaling", "project", args)
    finally:
        if keep is None:
            shutil.rmtree(state_dir, ignore_errors=True)
    result = child.result
    if result["events"] != events or result["runs"] != runs:
        raise RuntimeError(
            f"the projector folded {result['events']:,} events into {result['runs']:,} runs; "
            f"{topic} holds {events:,} events of {runs:,} runs ({result})"
        )
    return float(result["seconds"]), child.peak_rss_bytes


def measure_projector(ctx: BenchContext, label: str, batches: list[RunBatch]) -> ProjectorSample:
    """The projector over the shared topic `label`, repeated; memoized per label, so the
    rebuild figure and the curves reuse one measurement of the same topic."""
    key = f"projector:{label}"
    cached = ctx.memo.get(key)
    if isinstance(cached, ProjectorSample):
        return cached
    topic, fill = ctx.topic(label, batches)
    runs = sum(batch.count for batch in fill.batches)
    ctx.log(f"projector: rebuild over {fill.events:,} events of {runs:,} runs x{ctx.repeats}")
    samples = [project_once(ctx, topic, fill.events, runs) for _ in range(ctx.repeats)]
    sample = ProjectorSample(
        events=fill.events,
        seconds=median([s[0] for s in samples]),
        peak_rss_bytes=median([s[1] for s in samples]),
    )
    ctx.memo[key] = sample
    return sample


def size_label(count: int) -> str:
    """`100k`, `1M`, `3M`: how the table names sizes."""
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1000 and count % 1000 == 0:
        return f"{count // 1000}k"
    return f"{count:,}"


# --- the curves -------------------------------------------------------------------------------


def _point_rows(
    label: str, sample: ProjectorSample, base_label: str, base: ProjectorSample
) -> list[Row]:
    """Events/s and peak RSS of one point of a curve, against the curve's first point."""
    return [
        make_row(
            f"projector, {label}", sample.rate, "events/s", f"projector, {base_label}", base.rate
        ),
        make_row(
            f"projector peak RSS, {label}",
            sample.peak_rss_bytes / MIB,
            "MiB",
            f"projector peak RSS, {base_label}",
            base.peak_rss_bytes / MIB,
        ),
    ]


def _curve(ctx: BenchContext, points: list[tuple[str, str, list[RunBatch]]]) -> list[Row]:
    """Rows of every point of a curve; `points` are `(label, topic label, batches)`."""
    samples = [(label, measure_projector(ctx, memo, batches)) for label, memo, batches in points]
    base_label, base = samples[0]
    return [
        row for label, sample in samples for row in _point_rows(label, sample, base_label, base)
    ]


def log_sizes(quick: bool) -> list[int]:
    """Events in the log curve's topics (runs of 100 events); the last is the rebuild's."""
    return [20_000, 100_000] if quick else [100_000, 300_000, 1_000_000]


def log_topic(events: int) -> tuple[str, list[RunBatch]]:
    """Label and shape of a log of `events` events in runs of 100, shared across areas."""
    return f"log-{events}", [RunBatch(events // 100, 100)]


def _log_point(events: int) -> tuple[str, str, list[RunBatch]]:
    return (f"{size_label(events)}-event log", *log_topic(events))


def log_growth(ctx: BenchContext) -> list[Row]:
    """Events/s and RSS as the log grows, runs of 100 events (the 3M point comes last)."""
    return _curve(ctx, [_log_point(n) for n in log_sizes(ctx.quick)])


def largest_log(ctx: BenchContext) -> list[Row]:
    """The 3M-event point of the log curve, if what is left of the budget holds it."""
    big = 3_000_000
    if ctx.quick:
        ctx.note(f"scaling: {size_label(big)}-event log skipped (quick mode)")
        return []
    sizes = log_sizes(ctx.quick)
    base = measure_projector(ctx, *log_topic(sizes[0]))
    last = measure_projector(ctx, *log_topic(sizes[-1]))
    # filling the topic costs less than one fold; `repeats` folds follow
    predicted = (ctx.repeats + 1) * last.seconds * big / last.events
    left = ctx.budget - (time.monotonic() - ctx.started)
    if predicted > left:
        ctx.note(
            f"scaling: {size_label(big)}-event log skipped: ~{predicted:.0f} s predicted, "
            f"{max(left, 0):.0f} s left of the {ctx.budget:.0f} s budget (--budget)"
        )
        return []
    sample = measure_projector(ctx, *log_topic(big))
    return _point_rows(
        f"{size_label(big)}-event log", sample, f"{size_label(sizes[0])}-event log", base
    )


def run_growth(ctx: BenchContext) -> list[Row]:
    """Events/s and RSS with the events fixed and the runs 100x more from point to point
    (runs of 1,000, 100 and 10 events); the middle point is a point of the log curve."""
    events = 20_000 if ctx.quick else 300_000
    points = []
    for per_run in (1000, 100, 10):
        runs = events // per_run
        label, batches = (
            log_topic(events)
            if per_run == 100
            else (
                f"runs-{runs}x{per_run}",
                [RunBatch(runs, per_run)],
            )
        )
        points.append((f"{size_label(events)} events in {runs:,} runs", label, batches))
    return _curve(ctx, points)


def get_at_growth(ctx: BenchContext) -> list[Row]:
    """`get_at` latency (median, p99) for runs of 100, 10k and 100k events."""
    lengths = [100, 1_000, 10_000] if ctx.quick else [100, 10_000, 100_000]
    per_length = 10_000 if ctx.quick else 30_000
    batches = [RunBatch(max(1, per_length // n), n) for n in lengths]
    topic, fill = ctx.topic("get-at", batches)
    runs = sum(batch.count for batch in fill.batches)
    state_dir = ctx.scratch("get-at-state")
    ctx.log(f"get_at: folding {fill.events:,} events of runs of {lengths} events")
    project_once(ctx, topic, fill.events, runs, keep=state_dir)

    from behest.config import Settings
    from behest.read.query import RunStateQuery

    rng = random.Random(8)
    settings = Settings(bootstrap_servers=ctx.bootstrap, topic=topic, state_dir=state_dir)
    queries = 300 if ctx.quick else 1000
    results: list[tuple[int, list[float]]] = []
    with RunStateQuery.open(settings, secondary=False) as query:
        for batch in fill.batches:
            probes = [
                (rng.choice(batch.run_ids), rng.randrange(batch.events - 1)) for _ in range(queries)
            ]
            latencies = []
            for run_id, sequence in probes:
                start = time.perf_counter()
                found = query.raw.get_at(run_id, at_sequence=sequence)
                latencies.append(time.perf_counter() - start)
                if found is None:
                    raise RuntimeError(f"get_at found no state of {run_id} at {sequence}")
            results.append((batch.events, latencies))
    shutil.rmtree(state_dir, ignore_errors=True)

    base_events, base = results[0]
    rows = []
    for events, latencies in results:
        for stat, value, reference in (
            ("median", statistics.median(latencies), statistics.median(base)),
            ("p99", percentile(latencies, 99), percentile(base, 99)),
        ):
            rows.append(
                make_row(
                    f"get_at(at_sequence) {stat}, runs of {size_label(events)} events",
                    value * 1e6,
                    "µs",
                    f"same, runs of {size_label(base_events)} events",
                    reference * 1e6,
                )
            )
    return rows


def run(ctx: BenchContext) -> list[Row]:
    """All three curves; the optional 3M-event point last, when the budget is known."""
    log_rows = log_growth(ctx)
    run_rows = run_growth(ctx)
    get_at_rows = get_at_growth(ctx)
    return [*log_rows, *largest_log(ctx), *run_rows, *get_at_rows]


if __name__ == "__main__":
    child_main({"project": _project})
