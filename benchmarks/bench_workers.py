"""Folding on every core: `behest node --workers 2` against `--workers 1`, the same log.

A log of `events` events on a 6-partition topic is filled once; a node with a fresh state
dir and consumer group folds it with 1 worker, then another with 2, alternating for the
repeats (so load from elsewhere falls on both alike). The fold rate is measured over the
middle of each fold (from 10 % to 90 % of the log, sampled from the node's `/healthz`
offsets), so process start-up and the group's first assignment are not counted.

    python -m benchmarks.bench_workers [--events 300000] [--repeats 1]

`make bench` runs it as the `workers` area. The target (on 2 cores): 2 workers fold at
least 1.8x as fast as 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from behest.local.broker import free_port
from benchmarks.common import (
    BenchContext,
    Row,
    RunBatch,
    create_topic,
    delete_topic,
    fill_topic,
    kafka_broker,
    make_row,
    median,
)

PARTITIONS = 6
EVENTS_PER_RUN = 20
TARGET = 1.8


def fold_rate(bootstrap: str, topic: str, events: int, workers: int, workdir: Path) -> float:
    """Events a second one `behest node --workers N` folds, over 10-90 % of the log."""
    port = free_port()
    command = [sys.executable, "-m", "behest.cli", "node", "--workers", str(workers)]
    command += ["--port", str(port), "--state-dir", str(workdir / uuid.uuid4().hex[:8])]
    command += ["--group-id", f"bench-workers-{uuid.uuid4().hex[:8]}", "--topic", topic]
    command += ["--bootstrap-servers", bootstrap]
    node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + 300
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                folded = _folded(http, f"http://127.0.0.1:{port}")
                if folded is not None:
                    samples.append((time.perf_counter(), folded))
                    if folded >= events:
                        break
                if node.poll() is not None:
                    raise RuntimeError(f"the node ({workers} workers) exited: {node.returncode}")
                time.sleep(0.05)
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(40)
        except subprocess.TimeoutExpired:
            node.kill()
    if not samples or samples[-1][1] < events:
        raise RuntimeError(f"{workers} worker(s) did not fold {events} events within 300 s")
    start = next(s for s in samples if s[1] >= events * 0.1)
    end = next(s for s in samples if s[1] >= events * 0.9)
    if end[0] <= start[0]:
        raise RuntimeError("the fold was over between two samples: use a longer log")
    return (end[1] - start[1]) / (end[0] - start[0])


def _folded(http: httpx.Client, url: str) -> int | None:
    """Records folded so far (the sum of the next offsets of every partition)."""
    try:
        answer = http.get(f"{url}/healthz")
    except httpx.HTTPError:
        return None  # not up yet
    if answer.status_code != 200:
        return None
    return sum(int(o) for o in answer.json().get("offsets", {}).values())


def measure(bootstrap: str, events: int, repeats: int, workdir: Path) -> dict[int, list[float]]:
    """Fold rates (events/s) of 1 and 2 workers over one filled topic, alternating."""
    topic = f"bench-workers-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, PARTITIONS)
    try:
        fill_topic(bootstrap, topic, [RunBatch(events // EVENTS_PER_RUN, EVENTS_PER_RUN)])
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(repeats):
            for workers in (1, 2):
                rates[workers].append(fold_rate(bootstrap, topic, events, workers, workdir))
        return rates
    finally:
        delete_topic(bootstrap, topic)


def run(ctx: BenchContext) -> list[Row]:
    """`--workers 2` against `--workers 1` folding the same log, in one run."""
    events = 120_000 if ctx.quick else 300_000
    repeats = 1 if ctx.quick else 2
    ctx.log(f"workers: behest node --workers 2 vs 1, {events:,} events, x{repeats}")
    rates = measure(ctx.bootstrap, events, repeats, ctx.scratch("workers"))
    two, one = median(rates[2]), median(rates[1])
    ctx.note(
        f"workers: target {TARGET}x with 2 workers on 2 cores; measured {two / one:.2f}x "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    return [
        make_row(
            f"behest node --workers 2, {events:,} events, 6 partitions",
            two,
            "events/s",
            "behest node --workers 1, same log",
            one,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    with kafka_broker() as (bootstrap, _), tempfile.TemporaryDirectory() as workdir:
        rates = measure(bootstrap, args.events, args.repeats, Path(workdir))
    two, one = median(rates[2]), median(rates[1])
    summary = {
        "workers_1_events_per_s": [round(r) for r in rates[1]],
        "workers_2_events_per_s": [round(r) for r in rates[2]],
        "ratio": round(two / one, 2),
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
