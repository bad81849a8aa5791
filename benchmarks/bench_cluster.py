"""A routed read against a local one: `GET /runs/{id}` on a node, for runs it owns and for
runs another node owns (forwarded over a pooled connection), at a fixed request rate.

Two `behest node --workers 1` processes share a 6-partition topic; requests go to one of
them, alternating between a run it owns and a run the other owns, paced at `rate` requests
a second in all (half each); latencies are measured per request by the client. Beside
them, the CPU the forwarding costs per routed request: the first node's CPU time (it
answers its own runs and forwards the others) less the owner's (it answers the forwarded
ones; the background work of the two nodes is alike, so it cancels), per routed request.

    python -m benchmarks.bench_cluster [--rate 500] [--seconds 10]

`make bench` runs it as the `cluster` area.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from behest.client import RunStateClient
from behest.config import Settings
from behest.emit.partitioner import partition_for
from behest.emit.producer import EventProducer
from behest.local.ports import free_port
from behest.testing import sample_run
from benchmarks.common import (
    BenchContext,
    Row,
    create_topic,
    delete_topic,
    kafka_broker,
    make_row,
    percentile,
)

PARTITIONS = 6
RUNS = 60


@contextlib.contextmanager
def nodes(
    bootstrap: str, topic: str, workdir: Path, count: int = 2, pids: list[int] | None = None
) -> Iterator[list[str]]:
    """`count` node processes; their URLs once every partition is served (their main
    processes' ids into `pids`)."""
    group = f"bench-{topic}"
    ports = [free_port() for _ in range(count)]
    processes = []
    for i, port in enumerate(ports):
        command = [sys.executable, "-m", "behest.cli", "node", "--workers", "1"]
        command += ["--port", str(port), "--state-dir", str(workdir / f"node{i}")]
        command += ["--group-id", group, "--topic", topic, "--bootstrap-servers", bootstrap]
        processes.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    if pids is not None:
        pids += [process.pid for process in processes]
    try:
        _wait_until_serving(urls)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_until_serving(urls: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                views = [http.get(f"{url}/cluster").json() for url in urls]
            except (httpx.HTTPError, ValueError):
                time.sleep(0.3)
                continue
            served = sorted(p for view in views for p in view["serving"])
            if served == list(range(PARTITIONS)) and all(
                len(v["nodes"]) == len(urls) and v["serving"] for v in views
            ):
                return
            time.sleep(0.3)
    raise TimeoutError(f"nodes {urls} did not serve every partition within {timeout:g} s")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (None where /proc is not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(bootstrap: str, rate: float, seconds: float, workdir: Path) -> dict[str, list[float]]:
    """Latencies (s) of local and routed reads on the first node; under "forward_cpu", the
    CPU seconds the forwarding cost per routed request (if /proc tells)."""
    topic = f"bench-cluster-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, PARTITIONS)  # and its dead-letter topic
    try:
        settings = Settings(bootstrap_servers=bootstrap, topic=topic)
        runs = [sample_run(events=10, seed=n) for n in range(RUNS)]
        with EventProducer(settings) as producer:
            futures = [producer.emit(e) for run in runs for e in run]
            deliveries = [f.result(timeout=60) for f in futures]
        pids: list[int] = []
        with nodes(bootstrap, topic, workdir, pids=pids) as urls:
            with RunStateClient(urls[0]) as client:
                for delivery in deliveries[-PARTITIONS * 4 :]:
                    client.wait_for(delivery, timeout=60)
            with httpx.Client(timeout=10) as http:
                view = http.get(f"{urls[0]}/cluster").json()
                own = {int(p) for p, url in view["owners"].items() if url == urls[0]}
                ids = [str(run[0].run_id) for run in runs]
                local = [r for r in ids if partition_for(r, PARTITIONS) in own]
                routed = [r for r in ids if partition_for(r, PARTITIONS) not in own]
                for run_id in local + routed:  # warm both paths (pooled connections)
                    http.get(f"{urls[0]}/runs/{run_id}")
                before = [cpu_seconds(pid) for pid in pids]
                found = _paced(http, urls[0], local, routed, rate, seconds)
                after = [cpu_seconds(pid) for pid in pids]
                (a0, a1), (b0, b1) = after, before
                if a0 is not None and a1 is not None and b0 is not None and b1 is not None:
                    forwarding = (a0 - b0) - (a1 - b1)
                    found["forward_cpu"] = [forwarding / len(found["routed"])]
                return found
    finally:
        delete_topic(bootstrap, topic)


def _paced(
    http: httpx.Client, url: str, local: list[str], routed: list[str], rate: float, seconds: float
) -> dict[str, list[float]]:
    """Alternate local and routed reads at `rate` a second; latency per request."""
    latencies: dict[str, list[float]] = {"local": [], "routed": []}
    interval = 1.0 / rate
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        due = start + n * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        kind = "local" if n % 2 == 0 else "routed"
        ids = local if kind == "local" else routed
        sent = time.perf_counter()
        answer = http.get(f"{url}/runs/{ids[(n // 2) % len(ids)]}")
        latencies[kind].append(time.perf_counter() - sent)
        if answer.status_code != 200:
            raise RuntimeError(f"{kind} read answered {answer.status_code}: {answer.text}")
        n += 1
    return latencies


def run(ctx: BenchContext) -> list[Row]:
    """Routed p99 against local p99 at 500 requests a second."""
    rate, seconds = 500.0, (4.0 if ctx.quick else 10.0)
    ctx.log(f"cluster: 2 nodes, GET /runs/{{id}} local vs routed at {rate:g} req/s, {seconds:g} s")
    found = measure(ctx.bootstrap, rate, seconds, ctx.scratch("cluster"))
    local, routed = found["local"], found["routed"]
    achieved = (len(local) + len(routed)) / seconds
    rows = [
        make_row(
            f"routed GET /runs/{{id}} p99 at {achieved:.0f} req/s (target <= 2x local)",
            percentile(routed, 99) * 1000,
            "ms",
            "local GET /runs/{id} p99, same run",
            percentile(local, 99) * 1000,
        ),
        make_row(
            "routed GET /runs/{id} p50",
            percentile(routed, 50) * 1000,
            "ms",
            "local GET /runs/{id} p50",
            percentile(local, 50) * 1000,
        ),
    ]
    if "forward_cpu" in found:  # where /proc tells
        cpu = found["forward_cpu"][0] * 1e6
        rows.append(
            make_row("CPU spent forwarding a routed GET (first node less owner)", cpu, "us")
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="requests a second in all")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with kafka_broker() as (bootstrap, _), tempfile.TemporaryDirectory() as workdir:
        found = measure(bootstrap, args.rate, args.seconds, Path(workdir))
    forward_cpu = found.pop("forward_cpu", None)
    summary: dict[str, object] = {
        kind: {
            "n": len(values),
            "p50_ms": round(percentile(values, 50) * 1000, 2),
            "p99_ms": round(percentile(values, 99) * 1000, 2),
        }
        for kind, values in found.items()
    }
    if forward_cpu:
        summary["forward_cpu_us"] = round(forward_cpu[0] * 1e6, 1)
    print(json.dumps({**summary, "load": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
