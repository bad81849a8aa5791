"""How the projector and `get_at` behave as things grow.

- the log grows (events per run fixed): projector events/s and peak RSS, with 1 worker
  and with 2 (two `Projector` processes in one group on one state dir, as
  `behest node --workers 2` runs them; their peak RSS summed, and the larger one);
- the number of runs grows (events fixed): the same two figures;
- runs grow longer: `get_at` latency, which snapshots bound (a snapshot every
  `DEFAULT_SNAPSHOT_EVERY` events, so at most that many events are folded per query).

Each projector measurement is a fresh process with a fresh state dir folding the whole
topic with `run(until_caught_up=True)`, i.e. a rebuild; its figure's reference is the
smallest size of the same curve, so the ratio shows what growth costs. Two workers are
timed from the first one's `run()` to the last one's return (their join and rebalance in
it); their reference is the single worker at the same size, the repeats of the two
alternating unless another area measured one of them already (the 100k and 1M points:
`projector`, `rebuild`), whose repeats are reused.
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from benchmarks.bench_rebuild import Rebuild

MIB = 1024 * 1024
WORKERS = 2
LARGEST_LOG = 3_000_000
"""Events of the log curve's last point, measured only if the suite's budget holds it."""
"""The second worker count of the log curve (on 2 cores, one worker a core)."""

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


def measure_projector(
    ctx: BenchContext, label: str, batches: list[RunBatch], *, workers: int = 1
) -> ProjectorSample:
    """The projector over the shared topic `label`, repeated; memoized per label, so the
    rebuild figure and the curves reuse one measurement of the same topic. With `workers`
    above 1, the repeats alternate with those of that many workers (`measure_workers`)."""
    key = f"projector:{label}"
    cached = ctx.memo.get(key)
    if isinstance(cached, ProjectorSample):
        return cached
    topic, fill = ctx.topic(label, batches)
    runs = sum(batch.count for batch in fill.batches)
    also = f" alternating with {workers} workers" if workers > 1 else ""
    ctx.log(f"projector: rebuild over {fill.events:,} events of {runs:,} runs x{ctx.repeats}{also}")
    samples = []
    for repeat in range(ctx.repeats):
        samples.append(project_once(ctx, topic, fill.events, runs))
        if workers > 1 and len(_rebuilds(ctx, label, workers)) <= repeat:
            _rebuild(ctx, label, batches, workers)
    sample = ProjectorSample(
        events=fill.events,
        seconds=median([s[0] for s in samples]),
        peak_rss_bytes=median([s[1] for s in samples]),
    )
    ctx.memo[key] = sample
    return sample


@dataclass(frozen=True)
class WorkersSample:
    """Medians over the repeats of a rebuild by several workers."""

    workers: int
    events: int
    seconds: float
    peak_rss_sum: float
    """Bytes: the workers' peak RSS (each its own `VmHWM`) added up."""
    peak_rss_max: float
    """Bytes: the largest worker's peak RSS."""
    repeats: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _rebuilds(ctx: BenchContext, label: str, workers: int) -> list[Rebuild]:
    kept = ctx.memo.get(f"workers:{workers}:{label}")
    return list(kept) if isinstance(kept, list) else []


def remember_rebuilds(ctx: BenchContext, label: str, workers: int, rebuilds: list[Rebuild]) -> None:
    """Keep rebuilds of the topic `label` another area measured, for the curves to reuse."""
    ctx.memo[f"workers:{workers}:{label}"] = [*_rebuilds(ctx, label, workers), *rebuilds]


def _rebuild(ctx: BenchContext, label: str, batches: list[RunBatch], workers: int) -> None:
    from benchmarks.bench_rebuild import rebuild_once

    topic, fill = ctx.topic(label, batches)
    remember_rebuilds(
        ctx, label, workers, [rebuild_once(ctx.bootstrap, topic, fill.events, workers)]
    )


def measure_workers(
    ctx: BenchContext, label: str, batches: list[RunBatch], workers: int = WORKERS
) -> WorkersSample:
    """`workers` projector processes rebuilding the shared topic `label`: the rebuilds kept
    so far (`remember_rebuilds`), topped up to the suite's repeats."""
    _, fill = ctx.topic(label, batches)
    missing = ctx.repeats - len(_rebuilds(ctx, label, workers))
    if missing > 0:
        ctx.log(f"projector: {workers} workers over {fill.events:,} events x{missing}")
    for _ in range(missing):
        _rebuild(ctx, label, batches, workers)
    rebuilds = _rebuilds(ctx, label, workers)
    return WorkersSample(
        workers=workers,
        events=fill.events,
        seconds=median([r.seconds for r in rebuilds]),
        peak_rss_sum=median([sum(r.peak_rss) for r in rebuilds]),
        peak_rss_max=median([max(r.peak_rss) for r in rebuilds]),
        repeats=len(rebuilds),
    )


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


def _workers_rows(label: str, one: ProjectorSample, many: WorkersSample) -> list[Row]:
    """Events/s and peak RSS (summed, and the larger worker's) of several workers at one
    point of a curve, against one worker at the same point."""
    workers = f"{many.workers} workers"
    return [
        make_row(
            f"projector, {workers}, {label}",
            many.rate,
            "events/s",
            f"projector, 1 worker, {label}",
            one.rate,
        ),
        make_row(
            f"projector peak RSS, {workers} summed, {label}",
            many.peak_rss_sum / MIB,
            "MiB",
            f"projector peak RSS, 1 worker, {label}",
            one.peak_rss_bytes / MIB,
        ),
        make_row(
            f"projector peak RSS, {workers}, the larger, {label}",
            many.peak_rss_max / MIB,
            "MiB",
            f"projector peak RSS, 1 worker, {label}",
            one.peak_rss_bytes / MIB,
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


def workers_sizes(quick: bool) -> list[int]:
    """The log curve's sizes measured with 2 workers too (quick mode: the largest only)."""
    sizes = log_sizes(quick)
    return sizes[-1:] if quick else sizes


def log_growth(ctx: BenchContext) -> list[Row]:
    """Events/s and RSS as the log grows, runs of 100 events, with 1 and with 2 workers
    (the 3M point comes last)."""
    many = workers_sizes(ctx.quick)
    for events in log_sizes(ctx.quick):
        measure_projector(ctx, *log_topic(events), workers=WORKERS if events in many else 1)
    rows = _curve(ctx, [_log_point(n) for n in log_sizes(ctx.quick)])
    for events in many:
        label, batches = log_topic(events)
        one = measure_projector(ctx, label, batches)
        two = measure_workers(ctx, label, batches)
        rows += _workers_rows(f"{size_label(events)}-event log", one, two)
    return rows


def largest_log(ctx: BenchContext) -> list[Row]:
    """The 3M-event point of the log curve, with 1 and 2 workers, if what is left of the
    budget holds it (else with 1 worker only, if that fits)."""
    big = LARGEST_LOG
    if ctx.quick:
        ctx.note(f"scaling: {size_label(big)}-event log skipped (quick mode)")
        return []
    sizes = log_sizes(ctx.quick)
    base = measure_projector(ctx, *log_topic(sizes[0]))
    last = measure_projector(ctx, *log_topic(sizes[-1]))
    many = measure_workers(ctx, *log_topic(sizes[-1]))
    # filling the topic costs less than one fold; `repeats` folds of each follow
    one_alone = (ctx.repeats + 1) * last.seconds * big / last.events
    both = one_alone + ctx.repeats * many.seconds * big / many.events
    left = ctx.budget - (time.monotonic() - ctx.started)
    skipped = f"{max(left, 0):.0f} s left of the {ctx.budget:.0f} s budget (--budget)"
    if one_alone > left:
        ctx.note(
            f"scaling: {size_label(big)}-event log skipped: ~{one_alone:.0f} s predicted, "
            + skipped
        )
        return []
    label, batches = log_topic(big)
    workers = WORKERS if both <= left else 1
    if workers == 1:
        ctx.note(
            f"scaling: {size_label(big)}-event log with {WORKERS} workers skipped: "
            f"~{both:.0f} s predicted with them, " + skipped
        )
    sample = measure_projector(ctx, label, batches, workers=workers)
    name = f"{size_label(big)}-event log"
    rows = _point_rows(name, sample, f"{size_label(sizes[0])}-event log", base)
    if workers > 1:
        rows += _workers_rows(name, sample, measure_workers(ctx, label, batches))
    return rows


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
