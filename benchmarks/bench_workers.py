"""Folding on every core: `behest node --workers 2` against `--workers 1`, the same log.

A log of `events` events on a 6-partition topic is filled once; a node with a fresh state
dir and consumer group folds it with 1 worker, then another with 2, alternating for the
repeats (so load from elsewhere falls on both alike). The fold rate is measured from the
moment the workers' assignment settled (read from the node's log) to the end of the log,
from the offsets the workers commit, so process start-up and the first worker folding
alone until the second joins are not counted.

    python -m benchmarks.bench_workers [--events 600000] [--repeats 1]

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

from confluent_kafka import Consumer, TopicPartition

from behest.local.ports import free_port
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
    """Events a second one `behest node --workers N` folds once its workers' assignment
    has settled (the first worker alone has every partition until the others join)."""
    command = [sys.executable, "-m", "behest.cli", "node", "--workers", str(workers)]
    command += ["--port", str(free_port()), "--state-dir", str(workdir / uuid.uuid4().hex[:8])]
    group = f"bench-workers-{uuid.uuid4().hex[:8]}"
    command += ["--group-id", group, "--topic", topic]
    command += ["--bootstrap-servers", bootstrap, "--log-level", "info"]
    log_path = workdir / f"node-{uuid.uuid4().hex[:8]}.log"
    with log_path.open("wb") as log:
        node = subprocess.Popen(command, stdout=log, stderr=log)
    settled: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    try:
        deadline = time.monotonic() + 300
        progress = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            while time.monotonic() < deadline and (last is None or last[1] < events):
                if node.poll() is not None:
                    raise RuntimeError(f"the node ({workers} workers) exited: {node.returncode}")
                last = (time.perf_counter(), _folded(progress, topic))
                if settled is None and _settled(log_path.read_text(), workers):
                    settled = last
                time.sleep(0.05)
        finally:
            progress.close()
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(40)
        except subprocess.TimeoutExpired:
            node.kill()
    if last is None or last[1] < events:
        raise RuntimeError(f"{workers} worker(s) did not fold {events} events within 300 s")
    if settled is None or last[1] - settled[1] < events * 0.3:
        raise RuntimeError(f"{workers} worker(s) settled too late to measure: use a longer log")
    return (last[1] - settled[1]) / (last[0] - settled[0])


def _settled(log: str, workers: int) -> bool:
    """Whether each worker holds its share of the partitions: the last `workers`
    assignments logged are disjoint and cover every partition."""
    assigned = [
        {int(p) for p in line.split("assigned (", 1)[1].split(")", 1)[0].split(",") if p.strip()}
        for line in log.splitlines()
        if "behest.fold.projector: assigned (" in line
    ][-workers:]
    covered = [p for share in assigned for p in share]
    return len(assigned) == workers and sorted(covered) == list(range(PARTITIONS))


def _folded(progress: Consumer, topic: str) -> int:
    """Records folded so far: the offsets the workers commit after each batch (asked of
    the broker, so the node's HTTP reader does not catch up with every write meanwhile)."""
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return sum(max(tp.offset, 0) for tp in progress.committed(partitions, timeout=10))


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
    events = 300_000 if ctx.quick else 600_000
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
    parser.add_argument("--events", type=int, default=600_000)
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
