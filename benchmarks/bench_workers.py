"""Folding on every core: `behest node --workers 2` against `--workers 1`, the same log.

A log of `events` events on a 6-partition topic is filled once; after an untimed warm-up
fold of a third of it, a node with a fresh state dir and consumer group folds it with 1
worker, then another with 2, alternating for the repeats (so load from elsewhere falls on
both alike). The fold is timed from the moment the node's first worker is assigned
partitions (read from the node's log) to the end of the log (the offsets the workers
commit), so for 2 workers the second one's join, the rebalance it causes and any uneven
split that follows are in it; interpreter start-up is not (it is reported apart, with
where the machine's CPU went during the fold: per process, the broker's, and per kind of
thread in the workers).

    python -m benchmarks.bench_workers [--events 600000] [--repeats 1]

`make bench` runs it as the `workers` area. The target (on 2 cores): 2 workers fold at
least 1.8x as fast as 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

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
BUSY_MACHINE = 1.5
"""Cores in use during the 1-worker fold above which the machine was shared (one worker
and the broker need about 1.1)."""
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Fold:
    """One node's fold of the whole log, and where the machine's CPU went meanwhile."""

    rate: float
    """Events/s from the first assignment to the end of the log."""
    start_up: float
    """Seconds from the node's start to its first worker's assignment."""
    split_after: float
    """Seconds from the first assignment until each worker held its share."""
    workers_cores: float
    """CPU the worker processes used during the fold, in cores (CPU seconds / seconds)."""
    node_cores: float
    """CPU of the node's other processes (HTTP API, membership describer)."""
    machine_cores: float
    """CPU the whole machine used (the broker and everything else too)."""
    broker_cores: float = float("nan")
    """CPU of the broker's process (nan: not found, e.g. a broker elsewhere)."""
    threads: tuple[tuple[str, float], ...] = ()
    """The workers' CPU by kind of thread, in cores: the interpreter's main thread (the
    fold), librdkafka's, RocksDB's (flushes, compactions) and the rest."""


def fold(bootstrap: str, topic: str, events: int, workers: int, workdir: Path) -> Fold:
    """One `behest node --workers N` with a fresh state dir and group folding the topic."""
    command = [sys.executable, "-m", "behest.cli", "node", "--workers", str(workers)]
    command += ["--port", str(free_port()), "--state-dir", str(workdir / uuid.uuid4().hex[:8])]
    group = f"bench-workers-{uuid.uuid4().hex[:8]}"
    command += ["--group-id", group, "--topic", topic]
    command += ["--bootstrap-servers", bootstrap, "--log-level", "info"]
    log_path = workdir / f"node-{uuid.uuid4().hex[:8]}.log"
    broker = _listener(bootstrap)
    started = time.perf_counter()
    with log_path.open("wb") as log:
        node = subprocess.Popen(command, stdout=log, stderr=log)
    first: tuple[float, int, dict[int, float], float, float, _Threads] | None = None
    split: float | None = None
    try:
        deadline = time.monotonic() + 300
        progress = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            folded, ended = 0, 0.0
            while time.monotonic() < deadline and folded < events:
                if node.poll() is not None:
                    raise RuntimeError(f"the node ({workers} workers) exited: {node.returncode}")
                text = log_path.read_text()
                if first is None and _ASSIGNED in text:
                    at = time.perf_counter()
                    cpu = _cpu_seconds(node.pid)
                    first = (
                        at,
                        _folded(progress, topic),
                        cpu,
                        _machine_seconds(),
                        _process_seconds(broker),
                        _thread_seconds(cpu),
                    )
                if first is not None:
                    folded = _folded(progress, topic)
                    ended = time.perf_counter()  # the end of the log, once folded reaches it
                    if split is None and _settled(text, workers):
                        split = ended - first[0]
                    if folded >= events:
                        break
                time.sleep(0.05 if first is not None else 0.01)
            cpu, machine = _cpu_seconds(node.pid), _machine_seconds()
            broker_seconds, threads = _process_seconds(broker), _thread_seconds(cpu)
            workers_pids = _workers(node.pid, cpu)
        finally:
            progress.close()
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(40)
        except subprocess.TimeoutExpired:
            node.kill()
    if first is None or folded < events:
        raise RuntimeError(f"{workers} worker(s) did not fold {events} events within 300 s")
    at, before, cpu_before, machine_before, broker_before, threads_before = first
    seconds = ended - at
    used = {pid: cpu[pid] - cpu_before.get(pid, 0.0) for pid in cpu}
    kinds: dict[str, float] = {}
    for (pid, tid), (name, spent) in threads.items():
        if pid in workers_pids:
            kind = _thread_kind(pid, tid, name)
            spent -= threads_before.get((pid, tid), (name, 0.0))[1]
            kinds[kind] = kinds.get(kind, 0.0) + spent / seconds
    return Fold(
        rate=(events - before) / seconds,
        start_up=at - started,
        split_after=split if split is not None else float("nan"),
        workers_cores=sum(v for pid, v in used.items() if pid in workers_pids) / seconds,
        node_cores=sum(v for pid, v in used.items() if pid not in workers_pids) / seconds,
        machine_cores=(machine - machine_before) / seconds,
        broker_cores=(broker_seconds - broker_before) / seconds,
        threads=tuple(sorted(kinds.items(), key=lambda item: -item[1])),
    )


_ASSIGNED = "behest.fold.projector: assigned ("
_Threads = dict[tuple[int, int], tuple[str, float]]
"""`(pid, tid) -> (thread name, CPU seconds)`."""


def _settled(log: str, workers: int) -> bool:
    """Whether each worker holds its share of the partitions: the last `workers`
    assignments logged are disjoint and cover every partition."""
    assigned = [
        {int(p) for p in line.split("assigned (", 1)[1].split(")", 1)[0].split(",") if p.strip()}
        for line in log.splitlines()
        if _ASSIGNED in line
    ][-workers:]
    covered = [p for share in assigned for p in share]
    return len(assigned) == workers and sorted(covered) == list(range(PARTITIONS))


def _folded(progress: Consumer, topic: str) -> int:
    """Records folded so far: the offsets the workers commit after each batch (asked of
    the broker, so the node's HTTP reader does not catch up with every write meanwhile)."""
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return sum(max(tp.offset, 0) for tp in progress.committed(partitions, timeout=10))


def _processes() -> dict[int, tuple[int, float, str]]:
    """`pid -> (parent pid, CPU seconds, command line)` of every process on the machine."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # exited meanwhile
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        found[int(entry)] = (int(fields[1]), cpu, command.decode(errors="replace"))
    return found


def _cpu_seconds(root: int) -> dict[int, float]:
    """CPU seconds so far of `root` and every process below it."""
    every = _processes()
    tree = {root}
    grew = True
    while grew:
        below = {pid for pid, (parent, _, _) in every.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return {pid: every[pid][1] for pid in tree if pid in every}


def _workers(root: int, pids: dict[int, float]) -> set[int]:
    """The node's worker processes among `pids` (multiprocessing's spawned children)."""
    every = _processes()
    return {
        pid
        for pid in pids
        if pid in every and every[pid][0] == root and "multiprocessing.spawn" in every[pid][2]
    }


def _listener(bootstrap: str) -> int | None:
    """The pid of the process listening on the bootstrap address's port on this machine
    (the broker), None if there is none here."""
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{entry}/fd"):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        return int(entry)
    return None


def _process_seconds(pid: int | None) -> float:
    """CPU seconds so far of one process (nan if unknown)."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def _thread_seconds(pids: dict[int, float]) -> _Threads:
    """Every thread of `pids`, with its name and CPU seconds so far."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                    name = stat[stat.index("(") + 1 : stat.rindex(")")]
                    fields = stat.rsplit(")", 1)[1].split()
                    spent = (int(fields[11]) + int(fields[12])) / _TICK
                    found[(pid, int(tid))] = (name, spent)
    return found


def _thread_kind(pid: int, tid: int, name: str) -> str:
    """What a worker's thread does, from its name: librdkafka names its threads `rdk:…`,
    RocksDB `rocksdb:…`; the interpreter's main thread has the process's id."""
    if pid == tid:
        return "main"
    if name.startswith("rdk:"):
        return "librdkafka"
    if name.startswith("rocksdb:"):
        return "rocksdb"
    return "other"


def _machine_seconds() -> float:
    """CPU seconds the whole machine has been busy (all but idle and I/O wait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / _TICK


SPIN: Final = 2_000_000
"""Iterations of `_spin`: about 0.15 s of one core."""


def _spin(n: int) -> int:
    """Pure-Python CPU work, no I/O and nothing shared: the unit of `cpu_ceiling`."""
    x = 0
    for i in range(n):
        x += i * i
    return x & 1


def cpu_ceiling(pool: Any, repeats: int = 5) -> list[float]:
    """What two processes give against one on this machine now, for work that scales
    perfectly: the throughput of 2 spins at once against 1 (2.0 on two free, equal cores).
    The ceiling of the workers' ratio: a VM's two vCPUs may not give that (a busy host,
    hyper-threads shared with other guests); measured between the folds, the same load."""
    ratios = []
    for _ in range(repeats):
        start = time.perf_counter()
        pool.apply(_spin, (SPIN,))
        one = time.perf_counter() - start
        start = time.perf_counter()
        pool.map(_spin, [SPIN, SPIN], chunksize=1)
        ratios.append(2 * one / (time.perf_counter() - start))
    return ratios


def measure(
    bootstrap: str,
    events: int,
    repeats: int,
    workdir: Path,
    ceiling: list[float] | None = None,
) -> dict[int, list[Fold]]:
    """Folds of 1 and 2 workers over one filled topic, alternating; after each pair, the
    machine's `cpu_ceiling` appended to `ceiling` (if given)."""
    topic = f"bench-workers-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, PARTITIONS)
    try:
        fill_topic(bootstrap, topic, [RunBatch(events // EVENTS_PER_RUN, EVENTS_PER_RUN)])
        # untimed: a broker that has only been written to yet compiles its read path (JIT)
        # during the first folds, 0.1-0.3 cores for seconds, which the 1-worker fold has a
        # free core for and the 2-worker fold has not (in `make bench` earlier areas warm it)
        fold(bootstrap, topic, events // 3, 2, workdir)
        folds: dict[int, list[Fold]] = {1: [], 2: []}
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pool.map(_spin, [1, 1], chunksize=1)  # both started before any timing
            for _ in range(repeats):
                for workers in (1, 2):
                    folds[workers].append(fold(bootstrap, topic, events, workers, workdir))
                if ceiling is not None:
                    ceiling.extend(cpu_ceiling(pool))
        return folds
    finally:
        delete_topic(bootstrap, topic)


def describe(folds: dict[int, list[Fold]]) -> str:
    """Where the time and the CPU went, per worker count (medians), for the notes: the
    workers' CPU per event shows whether two fold as cheaply as one; the cores left to
    the rest of the machine (the broker, this benchmark, anything else) what they took."""
    parts = []
    for workers, runs in folds.items():
        cpu_per_event = median([f.workers_cores / f.rate * 1e6 for f in runs])
        rest = median([f.machine_cores - f.workers_cores - f.node_cores for f in runs])
        kinds: dict[str, list[float]] = {}
        for f in runs:
            for kind, cores in f.threads:
                kinds.setdefault(kind, []).append(cores)
        threads = ", ".join(f"{kind} {median(cores):.2f}" for kind, cores in kinds.items())
        parts.append(
            f"{workers} worker(s): start-up {median([f.start_up for f in runs]):.2f} s, "
            f"each on its share {median([f.split_after for f in runs]):.2f} s after the "
            f"first assignment; during the fold the workers used "
            f"{median([f.workers_cores for f in runs]):.2f} cores ({cpu_per_event:.1f} CPU "
            f"µs/event; by thread: {threads}), the node's other processes "
            f"{median([f.node_cores for f in runs]):.2f}, the broker "
            f"{median([f.broker_cores for f in runs]):.2f}, the rest of the machine "
            f"{rest:.2f} (of 2, the broker included)"
        )
    return "; ".join(parts)


def run(ctx: BenchContext) -> list[Row]:
    """`--workers 2` against `--workers 1` folding the same log, in one run."""
    events = 300_000 if ctx.quick else 600_000
    repeats = 1 if ctx.quick else 2
    ctx.log(f"workers: behest node --workers 2 vs 1, {events:,} events, x{repeats}")
    load = os.getloadavg()[0]
    ceiling: list[float] = []
    folds = measure(ctx.bootstrap, events, repeats, ctx.scratch("workers"), ceiling)
    two = median([f.rate for f in folds[2]])
    one = median([f.rate for f in folds[1]])
    ratios = ", ".join(f"{b.rate / a.rate:.2f}x" for a, b in zip(folds[1], folds[2], strict=True))
    ctx.note(
        f"workers: target {TARGET}x with 2 workers on 2 cores; measured {two / one:.2f}x "
        f"(per repeat {ratios}; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )
    ctx.note(f"workers: {describe(folds)}")
    ctx.note(
        f"workers: the machine's own ceiling, 2 processes against 1 on pure-Python CPU work "
        f"(no I/O, nothing shared) between the folds: {median(ceiling):.2f}x (per repeat "
        f"{', '.join(f'{r:.2f}x' for r in ceiling)})"
    )
    busy = median([f.machine_cores for f in folds[1]])
    if busy > BUSY_MACHINE:
        ctx.note(
            f"workers: the machine was busy elsewhere ({busy:.2f} of 2 cores during the "
            "1-worker fold, which needs about one): the ratio is not what two free cores give"
        )
    return [
        make_row(
            f"behest node --workers 2, {events:,} events, 6 partitions, from the first assignment",
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
    ceiling: list[float] = []
    with kafka_broker() as (bootstrap, _), tempfile.TemporaryDirectory() as workdir:
        folds = measure(bootstrap, args.events, args.repeats, Path(workdir), ceiling)
    two = median([f.rate for f in folds[2]])
    one = median([f.rate for f in folds[1]])
    summary = {
        "workers_1_events_per_s": [round(f.rate) for f in folds[1]],
        "workers_2_events_per_s": [round(f.rate) for f in folds[2]],
        "ratio": round(two / one, 2),
        "cpu_ceiling": [round(r, 2) for r in ceiling],
        "where": describe(folds),
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
