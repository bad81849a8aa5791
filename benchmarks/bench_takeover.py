"""Takeover after a crash: seconds from SIGKILL of a node until another serves its runs.

Two `behest node --workers 1` processes (6 s session timeout) fold a filled 6-partition
log; with `--standby-replicas 1` each also keeps a copy of the other's partitions. Once
both are done (and the copies at the log's end), one is SIGKILLed and the other is asked,
for a run of each of the dead node's partitions, for its state after a read-your-writes
wait on that partition's last record: the times of the first flagged (standby) answer and
of the first current one are taken. Without a standby, the survivor folds the dead node's
partitions from what its own store holds (nothing: it never owned them); with one, it
starts from its standby copy (`behest.fold.seeding`).

    python -m benchmarks.bench_takeover [--events 300000] [--standby 0 1]

Not part of `make bench` (a minute or more a configuration): run by hand.
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
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from behest.emit.partitioner import partition_for
from behest.local.ports import free_port
from benchmarks.bench_cluster import _wait_until_serving
from benchmarks.common import RunBatch, create_topic, delete_topic, fill_topic, kafka_broker

PARTITIONS = 6
EVENTS_PER_RUN = 20


def _start(bootstrap: str, topic: str, group: str, folder: Path, standby: int) -> tuple[Any, str]:
    port = free_port()
    command = [sys.executable, "-m", "behest.cli", "node", "--workers", "1", "--port", str(port)]
    command += ["--state-dir", str(folder), "--group-id", group, "--topic", topic]
    command += ["--bootstrap-servers", bootstrap, "--session-timeout", "6"]
    command += ["--standby-replicas", str(standby)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


def takeover(
    bootstrap: str, topic: str, ends: dict[int, int], runs: list[str], standby: int, workdir: Path
) -> dict[str, float | None]:
    """Seconds from SIGKILL to the first flagged and the first current answer for every
    partition the killed node owned."""
    group = f"bench-takeover-{uuid.uuid4().hex[:8]}"
    nodes = [_start(bootstrap, topic, group, workdir / f"{group}-{i}", standby) for i in range(2)]
    urls = [url for _, url in nodes]
    try:
        _wait_until_serving(urls, timeout=300)
        with httpx.Client(timeout=30) as http:
            for partition, end in ends.items():  # every partition folded to the end
                http.get(f"{urls[0]}/wait", params={"partition": partition, "offset": end - 1})
            time.sleep(5 if standby else 1)  # the copies reach the end too
            view = http.get(f"{urls[1]}/cluster").json()
            lost = [int(p) for p, url in view["owners"].items() if url == urls[0]]
            probes = {p: next(r for r in runs if partition_for(r, PARTITIONS) == p) for p in lost}
            nodes[0][0].kill()
            killed = time.monotonic()
            flagged: float | None = None
            current: set[int] = set()
            while len(current) < len(lost) and time.monotonic() - killed < 300:
                for partition, run in probes.items():
                    if partition in current:
                        continue
                    answer = http.get(f"{urls[1]}/runs/{run}")
                    if answer.status_code != 200:
                        continue
                    if answer.headers.get("x-behest-stale") == "true":
                        flagged = flagged or time.monotonic() - killed
                    else:
                        current.add(partition)
                time.sleep(0.05)
            return {
                "flagged_s": None if flagged is None else round(flagged, 2),
                "current_s": round(time.monotonic() - killed, 2),
                "partitions_taken_over": len(lost),
            }
    finally:
        for process, _ in nodes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in nodes:
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--standby", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    found: dict[str, object] = {"load_before": os.getloadavg()[0]}
    with kafka_broker() as (bootstrap, _), tempfile.TemporaryDirectory() as workdir:
        topic = f"bench-takeover-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, PARTITIONS)
        try:
            batch = RunBatch(args.events // EVENTS_PER_RUN, EVENTS_PER_RUN)
            fill_topic(bootstrap, topic, [batch])
            ends = _ends(bootstrap, topic)
            for standby in args.standby:
                found[f"standby_{standby}"] = takeover(
                    bootstrap, topic, ends, batch.run_ids, standby, Path(workdir)
                )
        finally:
            delete_topic(bootstrap, topic)
    found["load_after"] = os.getloadavg()[0]
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
