"""Restart latency: from `kill -9` of a running `behest project` to the next event folded by
the projector started in its place (what a supervisor such as systemd or Kubernetes does).

One measurement: a projector folds a live topic; it is SIGKILLed; a new one starts at once
on the same state dir; one event is produced right after the kill; the figure is the time
from the kill until that event is folded (its partition's stored offset passes it), read
through a RocksDB secondary that never blocks the projector.

Two configurations, each measured in the same run:

- static: what `behest project` does by default, a `group.instance.id` kept in the state
  dir and a 10 s session timeout, so the broker hands the restarted member its partitions
  back without a rebalance;
- dynamic: no `group.instance.id` and librdkafka's 45 s default session timeout (behest
  before static membership), so the group waits for the killed member's session to expire.

    python -m benchmarks.bench_restart [--kills N] [--mode static|dynamic|both]

`make bench` runs it as the `restart` area.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from behest.codec import encode
from behest.errors import StoreError
from behest.fold.storeset import StoreSet
from behest.testing import sample_run
from benchmarks.common import BenchContext, Row, create_topic, delete_topic, kafka_broker, make_row

MODES: dict[str, dict[str, str]] = {
    "static": {},
    "dynamic": {"BEHEST_STATIC_MEMBERSHIP": "false", "BEHEST_SESSION_TIMEOUT": "45"},
}
"""Environment of each configuration on top of the defaults."""

PROJECTION = "run_state"
TIMEOUT = 120.0
"""Seconds one restart may take before the measurement is abandoned."""


def behest_command() -> list[str]:
    script = Path(sys.executable).with_name("behest")
    return [str(script)] if script.exists() else [sys.executable, "-m", "behest.cli"]


def folded(state_dir: Path, topic: str) -> dict[int, int]:
    """Next offsets folded per partition by a projector that may be running."""
    try:
        store = StoreSet.open(state_dir, PROJECTION)
    except StoreError:  # not created yet, or being created right now
        return {}
    with store:
        return store.stored_offsets(topic)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` every 20 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:g} s")
        time.sleep(0.02)
    return time.monotonic()


class Feed:
    """Produces one new run's first event at a time and says where it landed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 0}
        )
        self.count = 0

    def send(self) -> tuple[int, int]:
        """(partition, offset) of a fresh event, once the broker has it."""
        self.count += 1
        event = sample_run(seed=self.count, events=1)[0]
        where: list[tuple[int, int]] = []
        self.producer.produce(
            self.topic,
            key=str(event.run_id).encode(),
            value=encode(event),
            on_delivery=lambda err, msg: (
                err is None and where.append((msg.partition(), msg.offset()))
            ),
        )
        self.producer.flush(30)
        if not where:
            raise RuntimeError(f"could not produce to {self.topic}")
        return where[0]


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`behest project` as a child process, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen([*behest_command(), "project"], env=env, stdout=out, stderr=out)


def measure(bootstrap: str, mode: str, kills: int, workdir: Path) -> list[float]:
    """Seconds from each kill -9 to the next event folded by the restarted projector."""
    topic = f"bench-restart-{mode}-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=3)
    state_dir = workdir / topic
    env = {
        **os.environ,
        "BEHEST_BOOTSTRAP_SERVERS": bootstrap,
        "BEHEST_TOPIC": topic,
        "BEHEST_STATE_DIR": str(state_dir),
        **MODES[mode],
    }
    log = workdir / f"{topic}.log"
    feed = Feed(bootstrap, topic)

    def folded_past(position: tuple[int, int]) -> Callable[[], bool]:
        partition, offset = position
        return lambda: folded(state_dir, topic).get(partition, 0) > offset

    figures = []
    process = start(env, log)
    try:
        wait_for(folded_past(feed.send()), TIMEOUT, f"{mode}: first fold (see {log})")
        for _ in range(kills):
            killed_at = time.monotonic()
            process.send_signal(signal.SIGKILL)
            process.wait()
            process = start(env, log)
            done = wait_for(
                folded_past(feed.send()), TIMEOUT, f"{mode}: fold after restart ({log})"
            )
            figures.append(done - killed_at)
    finally:
        process.kill()
        process.wait()
        delete_topic(bootstrap, topic)
    return figures


def run(ctx: BenchContext) -> list[Row]:
    """Both configurations; the static one is the figure, the dynamic one its reference."""
    kills = 1 if ctx.quick else 3
    ctx.log(f"restart: kill -9 + restart to next fold, static x{kills}, dynamic x1")
    static = measure(ctx.bootstrap, "static", kills, ctx.scratch("restart"))
    dynamic = measure(ctx.bootstrap, "dynamic", 1, ctx.scratch("restart"))
    return [
        make_row(
            "restart after kill -9 to next fold (static membership)",
            statistics.median(static),
            "s",
            "dynamic membership, 45 s session",
            statistics.median(dynamic),
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3, help="restarts per configuration")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    args = parser.parse_args(argv)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    with kafka_broker() as (bootstrap, _), tempfile.TemporaryDirectory() as workdir:
        for mode in modes:
            figures = measure(bootstrap, mode, args.kills, Path(workdir))
            print(
                json.dumps(
                    {
                        "mode": mode,
                        "seconds": [round(f, 2) for f in figures],
                        "median": round(statistics.median(figures), 2),
                        "max": round(max(figures), 2),
                        "load": os.getloadavg()[0],
                    }
                )
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
