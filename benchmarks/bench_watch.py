"""Watching a run live: time from `emit` to a watcher receiving the event, under background
traffic, and how many concurrent watchers one server holds within a latency bound.

`python -m benchmarks.bench_watch [--quick] [--background EVENTS_PER_S]` prints the table;
`run(ctx)` returns its rows for the suite. Real parts, each its own process as deployed:
`behest project` folds the topic, `behest serve` answers `GET /runs/{id}/watch`, a paced
producer writes the background traffic (10k events/s of realistic runs). This process
emits a probe run with `EventProducer` (each event stamped when emitted) and holds N
watchers of it over SSE (asyncio, keep-alive connections); a watcher's latency for an
event is its arrival time minus the event's timestamp. The watchers share the machine
with everything else, so the figures include the clients' own CPU. Each round also times
the same events from their stamp to the broker's acknowledgement (the producer's linger
and the broker): the reference that tells a broker's hiccup from watching's own delays.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer

from behest.config import Settings
from behest.emit.producer import EventProducer
from behest.events import AgentEvent, utc_now
from behest.local.ports import free_port
from behest.testing import sample_run
from benchmarks.common import (
    CHECKOUT,
    PRODUCER_CONFIG,
    BenchContext,
    Row,
    RunBatch,
    create_topic,
    delete_topic,
    iter_encoded,
    make_row,
    markdown_table,
    percentile,
)

BACKGROUND_RATE = 10_000
"""Events per second of background traffic while watching."""

TARGET_P99_MS = 100.0
WATCHERS_P99_MS = 250.0
PROBE_RATE = 20.0
"""Probe events per second (a busy agent run streaming text)."""


# --- the processes ----------------------------------------------------------------------------


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "BEHEST_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "BEHEST_TOPIC": settings.topic,
        "BEHEST_STATE_DIR": str(settings.state_dir),
    }


def _behest(*args: str, settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "behest.cli", *args],
        env=_env(settings),
        cwd=CHECKOUT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _traffic(bootstrap: str, topic: str, rate: int, seconds: float) -> subprocess.Popen[bytes]:
    limits = (str(rate), str(seconds))
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_watch", "traffic", bootstrap, topic, *limits],
        cwd=CHECKOUT,
    )


def produce_paced(bootstrap: str, topic: str, rate: int, seconds: float) -> None:
    """Realistic runs' events at `rate` per second for `seconds` (the background)."""
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG})
    records = iter_encoded([RunBatch(count=10**6, events=40)], random.Random(5))
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) + rate // 100
        while sent < due:
            key, value = next(records)
            try:
                producer.produce(topic, value, key)
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)


@contextmanager
def _stack(ctx: BenchContext, seconds: float, background: int) -> Iterator[tuple[Settings, str]]:
    """Topic, projector, server and background traffic; yields the settings and the URL."""
    topic = ctx.unique("watch")
    create_topic(ctx.bootstrap, topic)  # and its dead-letter topic
    settings = Settings(
        bootstrap_servers=ctx.bootstrap, topic=topic, state_dir=ctx.scratch("watch") / "state"
    )
    port = free_port()
    # A group of its own, as a deployment's projectors have: the default group id is shared
    # by every projector on a broker, and any member joining or leaving it anywhere stops
    # every member's fetching for the rebalance (seconds on a shared broker: 4-6 s stalls).
    group = ctx.unique("watch-group")
    processes = [_behest("project", "--group-id", group, settings=settings)]
    try:
        with EventProducer(settings) as producer:
            producer.emit(sample_run(events=2, seed=1)[0]).result(timeout=60)
        _wait_for(lambda: (settings.state_dir / "run_state" / "CURRENT").exists(), "projector")
        processes.append(_behest("serve", "--port", str(port), settings=settings))
        url = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _answers(url), "server")
        if background:
            processes.append(_traffic(ctx.bootstrap, topic, background, seconds))
        yield settings, url
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        delete_topic(ctx.bootstrap, topic)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(check: Any, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {what} did not start within {timeout:g} s")
        time.sleep(0.1)


# --- watching ---------------------------------------------------------------------------------


async def _watch(
    address: tuple[str, int], run_id: uuid.UUID, ready: asyncio.Event, count: list[int]
) -> list[float]:
    """Latencies (ms) of every event of the run one watcher receives. A lean client (a
    socket, messages found by their `\n\n` ends, arrival stamped per read): 500 of them
    in one process would otherwise spend more CPU parsing than the server sending."""
    reader, writer = await asyncio.open_connection(*address)
    host = f"{address[0]}:{address[1]}"
    writer.write(f"GET /runs/{run_id}/watch HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    latencies: list[float] = []
    pending = b""
    try:
        while chunk := await reader.read(1 << 16):
            now = time.time()
            *messages, pending = (pending + chunk).split(b"\n\n")
            for message in messages:
                # chunked transfer framing sits between messages: find the fields inside
                if (at := message.find(b"event: event\ndata: ")) >= 0:
                    event = orjson.loads(message[at + 19 :])
                    sent = datetime.fromisoformat(event["timestamp"]).timestamp()
                    latencies.append((now - sent) * 1000)
                elif (at := message.find(b"event: state\ndata: ")) >= 0:
                    if _ended(message[at + 19 :]):
                        return latencies
                elif b"retry:" in message:
                    count[0] += 1
                    if count[0] >= count[1]:
                        ready.set()
    finally:
        writer.close()
    return latencies


def _ended(state: bytes) -> bool:
    return orjson.loads(state)["status"] in ("completed", "failed", "cancelled")


def _probe(producer: EventProducer, events: Sequence[AgentEvent], acks: list[float]) -> None:
    """Emit a run's events at `PROBE_RATE`, each stamped as it is emitted; `acks` gets each
    one's time from its stamp to the broker's acknowledgement (ms), the part of the path
    that is the producer's and the broker's, not watching's."""

    def acked(emitted: float) -> Callable[[object], None]:
        return lambda _: acks.append((time.time() - emitted) * 1000)

    for event in events:
        stamped = event.model_copy(update={"timestamp": utc_now()})
        producer.emit(stamped).add_done_callback(acked(stamped.timestamp.timestamp()))
        time.sleep(1 / PROBE_RATE)


async def _round(
    producer: EventProducer, url: str, watchers: int, events: int, acks: list[float]
) -> list[float]:
    run = sample_run(events=events, seed=1000 + watchers + events)  # not the set-up run (seed 1)
    ready = asyncio.Event()
    count = [0, watchers]
    parts = httpx.URL(url)
    address = (parts.host, parts.port or 80)
    tasks = [
        asyncio.create_task(_watch(address, run[0].run_id, ready, count)) for _ in range(watchers)
    ]
    await asyncio.wait_for(ready.wait(), 120)
    await asyncio.to_thread(_probe, producer, run, acks)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    received = [len(r) for r in results]
    if min(received) != len(run):
        raise RuntimeError(f"a watcher missed events: got {min(received)} of {len(run)}")
    return [latency for result in results for latency in result]


def run(ctx: BenchContext, background: int = BACKGROUND_RATE) -> list[Row]:
    """Latency with one watcher, then rounds of more watchers, all under the background."""
    counts = (1, 100, 250, 500) if ctx.quick else (1, 100, 250, 500, 1000)
    events = 40 if ctx.quick else 80
    alone = 5 * events  # one watcher: enough events that p99 is not just the slowest one
    seconds = 30.0 + (alone + len(counts) * events) / PROBE_RATE + len(counts) * 15
    ctx.log(
        f"watch: {background:,} events/s background, probe runs of {events} events "
        f"({alone} for one watcher) at {PROBE_RATE:g}/s, watchers {counts}"
    )
    rows: list[Row] = []
    held = 0
    # One producer for every round, as an agent's process keeps one: a new producer's first
    # events wait ~0.5 s for its connection and idempotence set-up, which is not watching.
    with _stack(ctx, seconds, background) as (settings, url), EventProducer(settings) as producer:
        time.sleep(3)  # the background reaches its rate
        # As `behest serve` does: the client's own full collections over its start-up
        # objects (~100 ms with 500 watchers) would stamp arrivals late, which is not watching.
        gc.collect()
        gc.freeze()
        asyncio.run(_round(producer, url, 1, 20, []))  # warm-up (connections): not counted
        for watchers in counts:
            acks: list[float] = []
            latencies = asyncio.run(
                _round(producer, url, watchers, alone if watchers == 1 else events, acks)
            )
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            ack50, ack99 = percentile(acks, 50), percentile(acks, 99)
            ctx.log(
                f"watch: {watchers} watchers: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                f"(emit -> broker ack p50 {ack50:.1f} ms, p99 {ack99:.1f} ms)"
            )
            if watchers == 1:
                where = f"{background / 1000:g}k ev/s background"
                ack = "emit -> broker ack, same events"
                rows.append(make_row(f"emit -> watcher p50 ({where})", p50, "ms", ack, ack50))
                rows.append(make_row(f"emit -> watcher p99 ({where})", p99, "ms", ack, ack99))
                ctx.note(
                    f"watch: emit -> watcher p99 {p99:.0f} ms against a target of "
                    f"{TARGET_P99_MS:g} ms: {'met' if p99 <= TARGET_P99_MS else 'NOT met'}"
                )
            else:
                rows.append(make_row(f"emit -> watcher p99, {watchers} watchers", p99, "ms"))
            if p99 <= WATCHERS_P99_MS:
                held = max(held, watchers)
    gc.unfreeze()
    rows.append(make_row(f"watchers held with p99 <= {WATCHERS_P99_MS:g} ms", held, "watchers"))
    ctx.note(f"watch: largest round tried {counts[-1]} watchers; held {held} within the bound")
    return rows


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["traffic"]:
        bootstrap, topic, rate, seconds = argv[1:5]
        produce_paced(bootstrap, topic, int(rate), float(seconds))
        return
    from benchmarks.common import kafka_broker

    quick = "--quick" in argv
    background = int(argv[argv.index("--background") + 1]) if "--background" in argv else None
    with kafka_broker() as (bootstrap, _):
        workdir = Path(tempfile.mkdtemp(prefix="bench-watch-"))
        ctx = BenchContext(bootstrap=bootstrap, quick=quick, workdir=workdir)
        rows = run(ctx) if background is None else run(ctx, background)
        print(markdown_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
