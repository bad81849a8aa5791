"""Query latency: in-process reads beside raw rocksdict, and HTTP under a paced load.

`python -m benchmarks.bench_query [seconds]` prints the table; `run(seconds_budget)` returns
its rows for the suite. No broker: the store is built through the projector's own batch
fold (`behest.testing.ProjectionDriver`), then read as `behest serve` reads it, through a
RocksDB secondary instance.

- `get` / `raw.get`: each call timed alone over random runs, beside a raw rocksdict `get`
  of the same keys on the same instance (interleaved repeats).
- `get_many(1000)`: median of repeated batches, beside one raw rocksdict multi-get; its
  models are built when read (`behest.read.states`), so a row also times reading them all.
  Then what building them costs: `run_models.run_states` beside validating each, and the
  floor of any way to build them in Python, beside the multi-get: decoding the stored JSON
  (typed), and making the two pydantic objects of each state bare (nothing to parse).
- `get_at`: random points (half by sequence, half by time) on a 10k-event run, beside
  folding that run from sequence 0, which is what a snapshot saves.
- HTTP `GET /runs/{id}`: `behest serve` in a subprocess, driven by an open-loop asyncio
  client at a fixed rate over keep-alive connections; beside a bare uvicorn ASGI app
  answering the same bytes under the same load (the floor of server + loopback + client),
  in alternating one-second turns.
  A request's latency runs from when the client starts it (waiting for a free connection,
  i.e. queueing behind slow answers, counts) to its last byte read.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from behest.codec import decode_record
from behest.config import Settings
from behest.events import (
    AgentEvent,
    ModelStarted,
    RunCompleted,
    RunStarted,
    RunState,
    TextDelta,
    TokenUsage,
    UsageRecorded,
)
from behest.fold.store import StateStore
from behest.fold.storeset import StoreSet
from behest.projections.run_state import RunStateProjection
from behest.read.query import RunStateQuery
from behest.read.run_models import (
    _DECODE,
    _STATE_FIELDS,
    _USAGE_FIELDS,
    _VALIDATE,
    _models,
    run_states,
)
from behest.testing import ProjectionDriver
from benchmarks.common import Row, make_row, median, percentile, table_cells

RUNS = 20_000
LONG_RUN_EVENTS = 10_000
BATCH = 1000
HTTP_RATE = 1000.0
HTTP_CONNECTIONS = 16
TARGETS = {
    "get p99": (50.0, "µs"),
    f"get_many({BATCH}) median": (5.0, "ms"),
    "get_at p99": (1.0, "ms"),
    "HTTP GET /runs/{id} p99": (5.0, "ms"),
}
"""The issue's targets, by the start of the row name they apply to: each a ceiling."""

START = datetime(2026, 11, 20, tzinfo=UTC)
PROJECTION = RunStateProjection()


# --- the store --------------------------------------------------------------------------------


def _short_run(run_id: uuid.UUID, n: int) -> list[AgentEvent]:
    """Five events; every third run still active."""
    at = START + timedelta(milliseconds=n)
    payloads: list[Any] = [
        RunStarted(session_id=uuid.UUID(int=n % 500 + 1), provider="openai", model="gpt-4o"),
        ModelStarted(provider="openai", model="gpt-4o", iteration=1),
        TextDelta(delta="hello"),
        UsageRecorded(usage=TokenUsage.new(120, 30)),
    ]
    if n % 3:
        payloads.append(RunCompleted(finish_reason="stop", iterations=1))
    return [
        AgentEvent(run_id=run_id, sequence=s, timestamp=at + timedelta(microseconds=s), payload=p)
        for s, p in enumerate(payloads)
    ]


def _long_run(run_id: uuid.UUID) -> list[AgentEvent]:
    """`LONG_RUN_EVENTS` events, 1 ms apart: model calls streaming text, with usage."""
    payloads: list[Any] = [RunStarted(session_id=uuid.uuid4(), provider="openai", model="gpt-4o")]
    iteration = 0
    while len(payloads) < LONG_RUN_EVENTS:
        iteration += 1
        payloads.append(ModelStarted(provider="openai", model="gpt-4o", iteration=iteration))
        payloads += [TextDelta(delta=f"token {i} ") for i in range(8)]
        payloads.append(UsageRecorded(usage=TokenUsage.new(500, 40)))
    return [
        AgentEvent(
            run_id=run_id, sequence=s, timestamp=START + timedelta(milliseconds=s), payload=p
        )
        for s, p in enumerate(payloads[:LONG_RUN_EVENTS])
    ]


def build_store(directory: Path) -> tuple[list[uuid.UUID], list[AgentEvent]]:
    """`RUNS` short runs and one long run, folded by the projector's batch fold."""
    rng = random.Random(11)
    run_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(RUNS)]
    long_run = _long_run(uuid.UUID(int=rng.getrandbits(128), version=4))
    with ProjectionDriver(PROJECTION, directory) as driver:
        pending: list[AgentEvent] = []
        for n, run_id in enumerate(run_ids):
            pending += _short_run(run_id, n)
            if len(pending) >= 5000:
                driver.feed(pending)
                pending = []
        driver.feed(pending + long_run, batch_size=5000)
    return run_ids, long_run


# --- in-process reads -------------------------------------------------------------------------


def each_timed(call: Callable[[Any], object], args: Sequence[Any]) -> list[float]:
    """Seconds of every call, each timed alone."""
    clock = time.perf_counter
    out = []
    for arg in args:
        started = clock()
        call(arg)
        out.append(clock() - started)
    return out


def _only_partition(query: RunStateQuery[Any]) -> StateStore:
    """The one partition store the reads go to (the bench folds into one partition), whose
    rocksdict column family is the raw reference, on the same instance."""
    store = query.store
    if not isinstance(store, StoreSet) or store.partitions() != [0]:
        raise RuntimeError(f"expected one partition store, got {store!r}")
    gen = store._gen  # the bench's reference reads beneath the set on purpose
    only = None if gen is None else gen.get(0)
    if only is None:
        raise RuntimeError("partition 0 has no store open")
    return only


def in_process_rows(query: RunStateQuery, run_ids: list[uuid.UUID], long_run: list[AgentEvent],
                    budget: float) -> list[Row]:  # fmt: skip
    gc.collect()
    gc.freeze()  # as `behest serve` does: no full collection over start-up objects mid-call
    rng = random.Random(5)
    calls = max(5_000, min(60_000, int(budget * 1_500)))
    ids = [rng.choice(run_ids) for _ in range(calls)]
    keys = [run_id.bytes for run_id in ids]
    states = _only_partition(query).states
    raw: list[float] = []
    ours: list[float] = []
    ours_json: list[float] = []
    for _ in range(3):  # interleaved, so load elsewhere falls on all three alike
        raw += each_timed(states.get, keys)
        ours += each_timed(query.get, ids)
        ours_json += each_timed(query.raw.get, ids)

    batches = [rng.sample(run_ids, BATCH) for _ in range(max(9, min(60, int(budget))))]
    many_raw: list[float] = []
    many_ours: list[float] = []
    many_json: list[float] = []
    many_models: list[float] = []
    validate_each: list[float] = []
    bulk: list[float] = []
    decode_only: list[float] = []
    bare: list[float] = []
    for batch in batches:
        batch_keys = [r.bytes for r in batch]
        many_raw += each_timed(states.get, [batch_keys])
        many_ours += each_timed(query.get_many, [batch])
        many_json += each_timed(query.raw.get_many, [batch])
        many_models += each_timed(lambda b: list(query.get_many(b).values()), [batch])
        stored = [d for d in states.get(batch_keys) if d is not None]
        validate_each += each_timed(lambda d: list(map(_VALIDATE, d)), [stored])
        bulk += each_timed(run_states, [stored])
        decode_only += each_timed(lambda d: list(map(_DECODE, d)), [stored])
        bare += each_timed(_bare_models, [len(stored)])

    long_id = long_run[0].run_id
    first, last = long_run[0].timestamp, long_run[-1].timestamp
    span = (last - first).total_seconds()
    points: list[dict[str, Any]] = []
    for n in range(max(500, min(4000, int(budget * 50)))):
        if n % 2:
            points.append({"at_sequence": rng.randrange(LONG_RUN_EVENTS)})
        else:
            points.append({"as_of": first + timedelta(seconds=rng.uniform(0, span))})
    at = each_timed(lambda p: query.get_at(long_id, **p), points)
    stored = [data for _, data in query.store.iter_events(long_id.bytes)]

    def replay(_: object) -> None:
        state = None
        for data in stored:
            state = PROJECTION.apply(state, decode_record(data))

    replays = each_timed(replay, range(3))
    us, ms = 1e6, 1e3
    return [
        make_row("get p50", percentile(ours, 50) * us, "µs", "raw rocksdict get p50",
                 percentile(raw, 50) * us),
        make_row("get p99", percentile(ours, 99) * us, "µs", "raw rocksdict get p99",
                 percentile(raw, 99) * us),
        make_row("raw.get p99 (stored bytes)", percentile(ours_json, 99) * us, "µs",
                 "raw rocksdict get p99", percentile(raw, 99) * us),
        make_row(f"get_many({BATCH}) median", median(many_ours) * ms, "ms",
                 f"raw rocksdict multi-get of {BATCH}", median(many_raw) * ms),
        make_row(f"raw.get_many({BATCH}) median (stored bytes)", median(many_json) * ms, "ms",
                 f"raw rocksdict multi-get of {BATCH}", median(many_raw) * ms),
        make_row(f"get_many({BATCH}) + every model read, median", median(many_models) * ms,
                 "ms", f"raw rocksdict multi-get of {BATCH}", median(many_raw) * ms),
        make_row(f"RunState models of {BATCH} (run_models)", median(bulk) * ms,
                 "ms", "RunState.model_validate_json of each", median(validate_each) * ms),
        make_row(f"floor: typed decode of {BATCH} states",
                 median(decode_only) * ms, "ms", f"raw rocksdict multi-get of {BATCH}",
                 median(many_raw) * ms),
        make_row(f"floor: {BATCH} states' pydantic objects, bare",
                 median(bare) * ms, "ms", f"raw rocksdict multi-get of {BATCH}",
                 median(many_raw) * ms),
        make_row(f"get_at p50, {LONG_RUN_EVENTS // 1000}k-event run", percentile(at, 50) * ms,
                 "ms", "fold the run from sequence 0 (no snapshots)", median(replays) * ms),
        make_row(f"get_at p99, {LONG_RUN_EVENTS // 1000}k-event run", percentile(at, 99) * ms,
                 "ms", "fold the run from sequence 0 (no snapshots)", median(replays) * ms),
    ]  # fmt: skip


def _bare_models(n: int) -> list[RunState]:
    """`n` states' pydantic objects (a `RunState` and its `TokenUsage`) made as pydantic's
    validator makes them, with nothing to parse or convert: what any way of building
    `n` models must at least pay in Python."""
    _models(TokenUsage, [{} for _ in range(n)], _USAGE_FIELDS)
    return _models(RunState, [{} for _ in range(n)], _STATE_FIELDS)


# --- HTTP under load --------------------------------------------------------------------------

_BARE_APP = """
import sys, uvicorn
body = open(sys.argv[1], "rb").read()
headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            access_log=False, lifespan="off")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux): robust to
    load from elsewhere, unlike latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess, ready when it answers on `port`; always stopped on exit."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"server {argv[:4]} exited: {error[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {argv[:4]} did not listen on {port} in 30 s")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


async def paced_load(
    port: int, paths: Sequence[bytes], rate: float, seconds: float
) -> tuple[list[float], int, float]:
    """Open-loop GETs at `rate`/s: (latencies, non-200 answers, achieved rate)."""
    loop = asyncio.get_running_loop()
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(HTTP_CONNECTIONS):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    failures = 0

    async def one(path: bytes) -> None:
        nonlocal failures
        sent = loop.time()
        reader, writer = await free.get()
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        latencies.append(loop.time() - sent)
        if not head.startswith(b"HTTP/1.1 200"):
            failures += 1
        free.put_nowait((reader, writer))

    total = int(rate * seconds)
    tasks = []
    started = loop.time() + 0.05
    for n in range(total):
        due = started + n / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(paths[n % len(paths)])))
    await asyncio.gather(*tasks)
    achieved = total / (loop.time() - started)
    while not free.empty():
        _, writer = free.get_nowait()
        writer.close()
    return latencies, failures, achieved


def http_rows(state_dir: Path, run_ids: list[uuid.UUID], budget: float) -> list[Row]:
    seconds = max(2.0, min(10.0, budget * 0.2))
    rng = random.Random(9)
    paths = [f"/runs/{rng.choice(run_ids)}".encode() for _ in range(5000)]
    body_file = state_dir.parent / "body.json"
    with RunStateQuery.open(Settings(state_dir=state_dir.parent)) as query:
        body_file.write_bytes(query.raw.get(run_ids[0]) or b"{}")

    port, bare_port = _free_port(), _free_port()
    serve = [sys.executable, "-c", "from behest.cli import app; app()", "serve",
             "--state-dir", str(state_dir.parent), "--port", str(port)]  # fmt: skip
    bare_app = [sys.executable, "-c", _BARE_APP, str(body_file), str(bare_port)]
    ours: list[float] = []
    bare: list[float] = []
    achieved: list[float] = []
    cpu = {port: 0.0, bare_port: 0.0}
    with server(serve, port) as ours_process, server(bare_app, bare_port) as bare_process:
        pids = {port: ours_process.pid, bare_port: bare_process.pid}

        def timed_load(target: int, turn_paths: list[bytes]) -> tuple[list[float], int, float]:
            used = cpu_seconds(pids[target])
            answer = asyncio.run(paced_load(target, turn_paths, HTTP_RATE, 1.0))
            cpu[target] += cpu_seconds(pids[target]) - used
            return answer

        for target in (port, bare_port):
            asyncio.run(paced_load(target, paths[:200], HTTP_RATE, 1.0))  # warm up
        # Alternate one-second turns, so load from elsewhere falls on both alike.
        for turn in range(max(1, round(seconds))):
            start = turn * int(HTTP_RATE) % len(paths)
            turn_paths = paths[start:] + paths[:start]
            latencies, failures, rate = timed_load(port, turn_paths)
            if failures:
                raise RuntimeError(f"{failures} HTTP answers were not 200")
            ours += latencies
            achieved.append(rate)
            bare += timed_load(bare_port, turn_paths)[0]
    ms = 1e3
    label = f"at {HTTP_RATE:,.0f} req/s, {seconds:.0f} s"
    return [
        make_row(f"HTTP GET /runs/{{id}} p50 {label}", percentile(ours, 50) * ms, "ms",
                 "bare uvicorn app, same bytes and load, p50", percentile(bare, 50) * ms),
        make_row(f"HTTP GET /runs/{{id}} p99 {label}", percentile(ours, 99) * ms, "ms",
                 "bare uvicorn app, same bytes and load, p99", percentile(bare, 99) * ms),
        make_row("HTTP server CPU per request", cpu[port] / len(ours) * 1e6, "µs",
                 "bare uvicorn app, same bytes and load", cpu[bare_port] / len(bare) * 1e6),
        make_row("HTTP achieved request rate", min(achieved), "req/s", "asked for", HTTP_RATE),
    ]  # fmt: skip


# --- the area ---------------------------------------------------------------------------------


def targets(rows: Sequence[Row]) -> list[str]:
    """`target …: met|MISSED (figure)` for each of the issue's targets found in `rows`."""
    notes = []
    for key, (ceiling, unit) in TARGETS.items():
        for row in rows:
            if row["name"].startswith(key):
                verdict = "met" if row["value"] <= ceiling else "MISSED"
                notes.append(
                    f"target {key} ≤ {ceiling:g} {unit}: {verdict} ({row['value']:.3g} {unit})"
                )
                break
    return notes


def run(seconds_budget: float = 80.0, ctx: Any = None) -> list[Row]:
    """Rows `(name, value, unit, reference, reference_value, ratio)`; latencies, so a ratio
    above 1 means ours is slower than its reference."""
    workdir = Path(tempfile.mkdtemp(prefix="behest-bench-query-"))
    try:
        run_ids, long_run = build_store(workdir)
        state_dir = workdir / PROJECTION.name
        with RunStateQuery.open(Settings(state_dir=state_dir.parent)) as query:
            rows = in_process_rows(query, run_ids, long_run, seconds_budget)
        rows += http_rows(state_dir, run_ids, seconds_budget)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if ctx is not None:
        for note in targets(rows):
            ctx.note(note)
    return rows


def main(argv: Sequence[str]) -> int:
    budget = float(argv[0]) if argv else 80.0
    started = time.monotonic()
    rows = run(budget)
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print(f"query latency ({RUNS:,} runs + one {LONG_RUN_EVENTS:,}-event run; "
          f"{time.monotonic() - started:.0f} s; "
          f"load average {load} on {os.cpu_count()} cores)")  # fmt: skip
    widths = (44, 10, 6, 46, 10, 7)
    for row in rows:
        cells = table_cells(row)
        print(" ".join(c.rjust(w) if i in (1, 4, 5) else c.ljust(w)
                       for i, (c, w) in enumerate(zip(cells, widths, strict=True))))  # fmt: skip
    for note in targets(rows):
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
