"""A rebuild with one and with two projector workers, beside a raw consume of the same log.

    python -m benchmarks.bench_rebuild [--events N] [--repeats R] [--workers 1 [2 ...]]
    make bench ARGS="--only rebuild"      # 1 and 2 workers, 1M events (200k with --quick)

Fills a topic (runs of 100 events, 4 partitions), then per repeat, interleaved: a raw
consume of the whole log in a fresh process (bytes only), and, per worker count, that
many `Projector` processes started together on one fresh state dir in one consumer group
(`worker=w<i>`, as `behest node --workers N` runs them), each `run(until_caught_up=True)`.
The workers wait for each other before they join, as a node's do. A rebuild's time runs
from the first worker's `run()` to the last one's return, so group joins and rebalances
are in it; interpreter start-up and imports are not. Medians. The workers are dynamic
members here: each returns once caught up, and a static member that returns would hold its
partitions until its session timed out (a node's workers never return, so they stay static
there). In `make bench` the topic is the scaling curves' 1M-event log, and the 2-worker
rebuilds are points of their 2-worker curve too (with each worker's peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CHECKOUT,
    RESULT_MARK,
    BenchContext,
    Row,
    RunBatch,
    child_main,
    create_topic,
    delete_topic,
    fill_topic,
    kafka_broker,
    make_row,
    markdown_table,
    median,
    run_child,
)

EVENTS = 1_000_000
REPEATS = 2


def _worker(args: dict[str, Any]) -> dict[str, Any]:
    """One worker of a rebuild: fold its share of the topic into the shared state dir."""
    from behest.config import Settings
    from behest.fold.projector import Projector

    settings = Settings(
        bootstrap_servers=args["bootstrap"],
        topic=args["topic"],
        state_dir=Path(args["state_dir"]),
        # A worker that has caught up returns and leaves: as a dynamic member it leaves the
        # group at once; a static one would hold its partitions for the session timeout.
        static_membership=False,
    )
    with Projector(settings, group_id=args["group"], worker=args["worker"]) as projector:
        _join_together(Path(args["ready"]), args["worker"], args["workers"])
        started = time.time()
        metrics = projector.run(until_caught_up=True)
        ended = time.time()
    return {"started": started, "ended": ended, "events": metrics.events_folded}


def _join_together(ready: Path, worker: str, workers: int) -> None:
    """Wait until every worker of the rebuild is ready to join, as a node's workers do
    (`behest.cluster.node`): interpreter start-ups differ, and the first to join alone
    would fold every partition until it heard of the others (a heartbeat later)."""
    (ready / worker).touch()
    deadline = time.monotonic() + 60
    while sum(1 for _ in ready.iterdir()) < workers and time.monotonic() < deadline:
        time.sleep(0.002)


@dataclass(frozen=True)
class Rebuild:
    """One rebuild: its seconds and each worker's peak RSS (`VmHWM`, bytes)."""

    seconds: float
    peak_rss: tuple[int, ...]


def rebuild_once(bootstrap: str, topic: str, events: int, workers: int) -> Rebuild:
    """`workers` processes folding the whole topic into one fresh state dir."""
    state_dir = Path(tempfile.mkdtemp(prefix="behest-bench-rebuild-"))
    group = f"bench-rebuild-{uuid.uuid4().hex[:8]}"
    ready = Path(tempfile.mkdtemp(prefix="behest-bench-ready-"))
    try:
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_rebuild",
                    "worker",
                    json.dumps(
                        {
                            "bootstrap": bootstrap,
                            "topic": topic,
                            "state_dir": str(state_dir),
                            "group": group,
                            "worker": f"w{i}",
                            "workers": workers,
                            "ready": str(ready),
                        }
                    ),
                ],
                cwd=CHECKOUT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(workers)
        ]
        results = []
        for child in children:
            out, err = child.communicate(timeout=600)
            marked = [line for line in out.splitlines() if line.startswith(RESULT_MARK)]
            if child.returncode != 0 or not marked:
                raise RuntimeError(f"a rebuild worker failed:\n{(out + err)[-3000:]}")
            results.append(json.loads(marked[-1][len(RESULT_MARK) :]))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(ready, ignore_errors=True)
    folded = sum(r["events"] for r in results)
    if folded < events:
        raise RuntimeError(f"{workers} workers folded {folded:,} of {events:,} events")
    return Rebuild(
        seconds=max(r["ended"] for r in results) - min(r["started"] for r in results),
        peak_rss=tuple(int(r["peak_rss_bytes"]) for r in results),
    )


def measure(
    bootstrap: str, topic: str, events: int, repeats: int, worker_counts: list[int]
) -> tuple[list[Row], dict[int, list[Rebuild]]]:
    """Rows of each worker count against a raw consume, interleaved per repeat; and the
    rebuilds themselves (the scaling curves reuse them)."""
    raw: list[float] = []
    rebuilt: dict[int, list[Rebuild]] = {n: [] for n in worker_counts}
    for repeat in range(repeats):
        group = f"bench-rebuild-raw-{uuid.uuid4().hex[:8]}"
        consumed = run_child(
            "benchmarks.bench_limits",
            "consume",
            {"bootstrap": bootstrap, "topic": topic, "count": events, "group": group},
        )
        raw.append(consumed.result["seconds"])
        for workers in worker_counts:
            rebuilt[workers].append(rebuild_once(bootstrap, topic, events, workers))
        print(
            f"repeat {repeat + 1}: load {os.getloadavg()[0]:.1f}, raw {raw[-1]:.2f} s, "
            + ", ".join(f"{n} worker(s) {s[-1].seconds:.2f} s" for n, s in rebuilt.items()),
            file=sys.stderr,
        )
    rows = [
        make_row(
            f"rebuild of {events:,} events, {workers} worker(s), median of {len(runs)}",
            median([r.seconds for r in runs]),
            "s",
            "raw confluent-kafka consume of the same log (one process)",
            median(raw),
        )
        for workers, runs in rebuilt.items()
    ]
    return rows, rebuilt


def run(ctx: BenchContext) -> list[Row]:
    """The suite's `rebuild` area: one and two workers against a raw consume, in one run."""
    from benchmarks.bench_scaling import log_topic, remember_rebuilds

    events = 200_000 if ctx.quick else EVENTS
    ctx.log(f"rebuild: {events:,} events with 1 and 2 workers beside a raw consume, x{REPEATS}")
    label, batches = log_topic(events)  # the scaling curves' topic of this size
    topic, _ = ctx.topic(label, batches)
    rows, rebuilt = measure(ctx.bootstrap, topic, events, REPEATS, [1, 2])
    remember_rebuilds(ctx, label, 2, rebuilt[2])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    topic = f"bench-rebuild-{uuid.uuid4().hex[:8]}"
    with kafka_broker(lambda line: print(line, file=sys.stderr)) as (bootstrap, description):
        create_topic(bootstrap, topic)
        try:
            fill_topic(bootstrap, topic, [RunBatch(args.events // 100, 100)])
            rows, _ = measure(bootstrap, topic, args.events, args.repeats, args.workers)
        finally:
            delete_topic(bootstrap, topic)
    print(f"broker: {description}; load average {os.getloadavg()[0]:.1f}")
    print(markdown_table(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        child_main({"worker": _worker})
    else:
        main()
