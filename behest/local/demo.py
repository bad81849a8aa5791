"""`behest demo`: the whole job, end to end, on a real broker, in one command.

Starts the local broker when no `BEHEST_BOOTSTRAP_SERVERS` is set, creates the topic,
simulates concurrent agent runs through both producers while a projector folds them
into RocksDB and the HTTP API serves them, then shows what the query layer answers:
a table of run states, a point-in-time answer beside the current state of the same
run, a batch reload of the active runs, and the throughput it saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import httpx
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from behest.admin import create_topics
from behest.config import DEFAULT_BROKER_PORT, Settings
from behest.events import RunId, RunState, format_time
from behest.fold.projector import Projector, ProjectorMetrics
from behest.local.broker import LocalBroker
from behest.local.ports import port_in_use
from behest.local.simulate import SimulationSummary, simulate
from behest.read.health import ProjectorWatch
from behest.read.query import RunStateQuery
from behest.read.server import BackgroundServer

SHOWN_RUNS = 12
T = TypeVar("T")
WAIT_TIMEOUT = 120.0


@dataclass
class DemoReport:
    """What the demo produced and showed, so a test can check the screen against it."""

    bootstrap: str
    api_url: str
    summary: SimulationSummary
    shown: list[RunState] = field(default_factory=list)
    point_in_time: tuple[RunState, RunState, datetime] | None = None
    active_reloaded: int = 0
    reload_ms: float = 0.0
    fold_seconds: float = 0.0
    http_status: int = 0


@contextmanager
def _broker(settings: Settings, console: Console, keep: bool) -> Iterator[Settings]:
    """The configured cluster, or the local broker (started, and stopped after, if needed)."""
    if settings.bootstrap_servers:
        console.print(f"[bold]broker[/]  {settings.bootstrap_servers} (BEHEST_BOOTSTRAP_SERVERS)")
        yield settings
        return
    broker = LocalBroker(progress=lambda line: console.print(f"  [dim]{line}[/]"))
    with console.status("starting a local Kafka broker (the first time downloads its jars)"):
        status = broker.start(DEFAULT_BROKER_PORT)
    note = "already running" if status.already_running else f"started, pid {status.pid}"
    console.print(f"[bold]broker[/]  {status.bootstrap} (local, {note})")
    try:
        yield settings.model_copy(update={"bootstrap_servers": status.bootstrap})
    finally:
        if not status.already_running and not keep:
            broker.stop()
            console.print("[dim]local broker stopped[/]")


def _in_background(work: Callable[[], T]) -> Future[T]:
    """Run `work` on a daemon thread (Ctrl-C must not wait for it); its result as a future."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(work())
        except BaseException as error:  # handed to whoever waits on the future
            future.set_exception(error)

    threading.Thread(target=target, daemon=True).start()
    return future


def _progress_line(
    metrics: ProjectorMetrics, start: dict[int, int], started: float, producing: bool
) -> str:
    on_log = sum(metrics.positions.values()) + metrics.total_lag - sum(start.values())
    elapsed = max(time.monotonic() - started, 1e-9)
    phase = "producing + folding" if producing else "folding"
    return (
        f"[bold]{phase}[/]  on the log: {on_log:,}  folded: {metrics.events_folded:,}  "
        f"lag: {metrics.total_lag:,}  dead letters: {metrics.dead_letters}  "
        f"({metrics.events_folded / elapsed:,.0f} events/s)"
    )


def _state_table(states: list[RunState]) -> Table:
    table = Table(title="Run states (RunStateQuery.get_many)", box=box.SIMPLE_HEAD)
    table.add_column("run")
    table.add_column("status")
    for column in ("iter", "tokens", "events"):
        table.add_column(column, justify="right")
    table.add_column("model", overflow="ellipsis", no_wrap=True)
    for state in states:
        table.add_row(
            short_id(state.run_id),
            state.status.value,
            str(state.iteration),
            str(state.total_usage.total_tokens),
            str(state.event_count),
            state.model or "-",
        )
    return table


def short_id(run_id: object) -> str:
    """The first 8 hex digits of a run id: enough to tell a screenful of runs apart."""
    return str(run_id)[:8]


def _compare_table(past: RunState, now: RunState, as_of: datetime) -> Table:
    table = Table(title=f"Run {now.run_id}: as of {format_time(as_of)} vs now", box=box.SIMPLE_HEAD)
    table.add_column("field")
    table.add_column("as of", style="cyan")
    table.add_column("now", style="green")
    for name in ("status", "iteration", "total_usage", "event_count", "sequence", "updated_at"):
        before, after = getattr(past, name), getattr(now, name)
        if isinstance(before, datetime):
            before, after = format_time(before), format_time(after)
        elif name == "total_usage":
            before, after = before.total_tokens, after.total_tokens
        elif name == "status":
            before, after = before.value, after.value
        table.add_row(name, str(before), str(after))
    return table


def _pick_long_run(states: Mapping[RunId, RunState | None]) -> RunState | None:
    """The run with the most events: its midpoint makes an interesting point in time."""
    known = [s for s in states.values() if s is not None and s.event_count > 2]
    return max(known, key=lambda s: s.event_count, default=None)


def run_demo(
    settings: Settings | None = None,
    *,
    runs: int = 300,
    concurrency: int = 48,
    partitions: int = 6,
    seed: int | None = None,
    port: int = 8000,
    keep_running: bool = False,
    console: Console | None = None,
) -> DemoReport:
    """Run the demo; with `keep_running`, serve the API until Ctrl-C before cleaning up."""
    console = console or Console()
    settings = settings or Settings()
    with ExitStack() as stack:
        settings = stack.enter_context(_broker(settings, console, keep_running))
        for result in create_topics(settings, partitions=partitions):
            console.print(f"[bold]topic[/]   {result}")

        projector = Projector(settings)
        stack.callback(projector.close)
        query = RunStateQuery(projector.store, topic=settings.topic)
        start_positions = dict(projector.metrics.positions)
        stop = threading.Event()
        folding = threading.Thread(target=projector.run, kwargs={"stop_event": stop}, daemon=True)
        folding.start()

        def stop_folding() -> None:
            stop.set()
            folding.join(30)

        stack.callback(stop_folding)
        server = BackgroundServer(
            query,
            port=port if port and not port_in_use(port) else 0,
            metrics_source=lambda: projector.metrics,
            watch=ProjectorWatch.of(settings.state_dir, projector.projection.name),
        )
        stack.enter_context(server)
        console.print(f"[bold]API[/]     {server.url}  (OpenAPI: {server.url}/openapi.json)")
        console.print(f"[bold]state[/]   {projector.path}")
        console.print(
            f"\nsimulating {runs} agent runs, {concurrency} at a time, "
            "through EventProducer (sync) and AsyncEventProducer (asyncio) ..."
        )

        started = time.monotonic()
        producing = _in_background(
            lambda: simulate(settings, runs, concurrency=concurrency, seed=seed)
        )
        with Live(console=console, refresh_per_second=8) as live:
            while not producing.done():
                live.update(_progress_line(projector.metrics, start_positions, started, True))
                time.sleep(0.125)
            summary = producing.result()
            for delivery in summary.last_delivery.values():
                live.update(_progress_line(projector.metrics, start_positions, started, False))
                query.wait_for(delivery, timeout=WAIT_TIMEOUT)
            live.update(_progress_line(projector.metrics, start_positions, started, False))
        report = DemoReport(settings.bootstrap, server.url, summary)
        report.fold_seconds = time.monotonic() - started
        _show(report, query, console)
        if keep_running:
            _keep_serving(report, console)
    return report


def _show(report: DemoReport, query: RunStateQuery, console: Console) -> None:
    """Query what was folded and put it on the screen."""
    summary = report.summary
    states = query.get_many(summary.run_ids[:SHOWN_RUNS])
    report.shown = [s for s in states.values() if s is not None]
    console.print()
    console.print(_state_table(report.shown))

    long_run = _pick_long_run(query.get_many(summary.run_ids[: min(len(summary.run_ids), 200)]))
    if long_run is not None:
        as_of = long_run.created_at + (long_run.updated_at - long_run.created_at) / 2
        past = query.get_at(long_run.run_id, as_of=as_of)
        if past is not None:
            report.point_in_time = (past, long_run, as_of)
            console.print(_compare_table(past, long_run, as_of))

    began = time.perf_counter()
    active_ids: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = query.list_runs(active=True, limit=1000, cursor=cursor)
        active_ids.extend(str(s.run_id) for s in page)
        if cursor is None:
            break
    reloaded = query.get_many(active_ids[:1000]) if active_ids else {}
    report.reload_ms = (time.perf_counter() - began) * 1000
    report.active_reloaded = sum(1 for s in reloaded.values() if s is not None)
    console.print(
        f"\n[bold]batch reload[/]  {report.active_reloaded} active runs listed and reloaded "
        f"in {report.reload_ms:.1f} ms (list_runs(active=True) + get_many)"
    )

    first = summary.run_ids[0]
    response = httpx.get(f"{report.api_url}/runs/{first}", timeout=10)
    report.http_status = response.status_code
    console.print(f"[bold]HTTP[/]          GET {response.url} -> {response.status_code}")

    console.print(
        f"[bold]throughput[/]    produced {summary.events:,} events of {summary.runs} runs at "
        f"{summary.events_per_second:,.0f} events/s; all folded and queryable "
        f"{report.fold_seconds:.1f} s after the first was produced"
    )
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items()))
    console.print(f"[bold]outcomes[/]      {statuses}")


def _keep_serving(report: DemoReport, console: Console) -> None:
    run_id = report.summary.run_ids[0]
    console.print(
        f"\nThe API stays up at {report.api_url} (Ctrl-C to stop). Try:\n"
        f"  curl {report.api_url}/runs/{run_id}\n"
        f"  curl '{report.api_url}/runs?active=true&limit=5'\n"
        f"  BEHEST_BOOTSTRAP_SERVERS={report.bootstrap} behest state {run_id}"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping ...")
