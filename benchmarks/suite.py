"""The benchmark suite: every area against one broker, one table, each figure beside its
reference measured in the same run.

    python -m benchmarks [--quick] [--only AREA ...] [--markdown FILE]

Areas run in a fixed order (the scaling curves last, so the optional 3M-event point can
use what is left of the 12-minute budget). An area whose module is missing is skipped
with a line saying so; an area that fails prints its error and makes the exit status 1.
Nothing in the table is typed in: a row exists only if it was measured in this run, and
a target an area hands back as a reference becomes a note under the table instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import confluent_kafka
from rich.console import Console
from rich.table import Table

from benchmarks.common import (
    TABLE_HEADERS,
    BenchContext,
    Row,
    format_number,
    kafka_broker,
    make_row,
    markdown_table,
    median,
    table_cells,
)

AREAS = (
    "limits",
    "codec",
    "producer",
    "projector",
    "profile",
    "query",
    "restart",
    "watch",
    "cluster",
    "workers",
    "rebuild",
    "scaling",
)
"""In the order they run."""

MODULES = {
    "limits": "benchmarks.bench_limits",
    "codec": "benchmarks.bench_codec",
    "producer": "benchmarks.bench_producer",
    "projector": "benchmarks.bench_projector",
    "profile": "benchmarks.bench_profile",
    "query": "benchmarks.bench_query",
    "restart": "benchmarks.bench_restart",
    "watch": "benchmarks.bench_watch",
    "cluster": "benchmarks.bench_cluster",
    "workers": "benchmarks.bench_workers",
    "rebuild": "benchmarks.bench_rebuild",
    "scaling": "benchmarks.bench_scaling",
}

AREA_ARGUMENTS: dict[str, dict[str, tuple[Any, Any]]] = {
    "codec": {"seconds_budget": (20.0, 6.0)},
    "producer": {"seconds_budget": (45.0, 12.0)},
    "projector": {"seconds_budget": (60.0, 12.0), "events": (200_000, 30_000)},
    "query": {"seconds_budget": (40.0, 10.0)},
}
"""(full, quick) values offered to an area's `run` when its signature has the name."""

TARGET_RAW_SHARE = 0.5
TARGET_PEER_FACTOR = 3.0
TARGET_REBUILD_SECONDS = 10.0
MIB = 1024 * 1024


# --- the projector against the raw limit and Quix Streams ---------------------------------------


def projector_versus(ctx: BenchContext) -> list[Row]:
    """Raw consume, the projector and Quix Streams over the same topic, interleaved.

    The repeats alternate (raw, projector, Quix, raw, ...), so load from anything else on
    the machine falls on all of them alike.
    """
    from benchmarks.bench_limits import consume_once
    from benchmarks.bench_scaling import (
        ProjectorSample,
        log_sizes,
        log_topic,
        project_once,
        size_label,
    )
    from benchmarks.peers import quix_run_state

    events = log_sizes(ctx.quick)[0]
    label, batches = log_topic(events)
    topic, _ = ctx.topic(label, batches)
    runs = sum(batch.count for batch in batches)
    peers = quix_run_state.available()
    if not peers:
        ctx.note(
            "skipped: Quix Streams rows: quixstreams not installed (`make bench` uses .venv-bench)"
        )
    # Quix Streams' default keeps a changelog topic; without it, its fastest configuration
    changelog_variants = (True,) if ctx.quick else (True, False)
    raw: list[tuple[float, int]] = []
    projector: list[tuple[float, int]] = []
    quix: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
    ctx.log(f"projector vs raw consume vs Quix Streams over {events:,} events x{ctx.repeats}")
    for _ in range(ctx.repeats):
        consumed = consume_once(ctx, topic, events)
        raw.append((consumed.result["seconds"], consumed.peak_rss_bytes))
        projector.append(project_once(ctx, topic, events, runs))
        for changelog in changelog_variants if peers else ():
            child = quix_run_state.fold_once(ctx, topic, events, changelog=changelog)
            if child.result["events"] != events or child.result["runs"] != runs:
                raise RuntimeError(f"Quix Streams folded {child.result}, not {events} events")
            quix[changelog].append((child.result["seconds"], child.peak_rss_bytes))

    sample = ProjectorSample(
        events=events,
        seconds=median([s for s, _ in projector]),
        peak_rss_bytes=median([r for _, r in projector]),
    )
    ctx.memo[f"projector:{label}"] = sample  # the log curve's first point
    name = f"projector (RunState → RocksDB), {size_label(events)} events"
    raw_rate = events / median([s for s, _ in raw])
    rows = [
        make_row(name, sample.rate, "events/s", "raw confluent-kafka consume, bytes only", raw_rate)
    ]
    ctx.note(
        _target(
            ctx,
            "projector ≥ 50% of raw consume",
            sample.rate / raw_rate >= TARGET_RAW_SHARE,
            f"{sample.rate / raw_rate:.0%}",
        )
    )
    for changelog, label in ((True, "changelog on (its default)"), (False, "changelog off")):
        if not quix[changelog]:
            continue
        quix_rate = events / median([s for s, _ in quix[changelog]])
        rows.append(
            make_row(name, sample.rate, "events/s", f"Quix Streams, same fold, {label}", quix_rate)
        )
        ctx.note(
            _target(
                ctx,
                f"projector ≥ 3x Quix Streams ({label})",
                sample.rate / quix_rate >= TARGET_PEER_FACTOR,
                f"{sample.rate / quix_rate:.2f}x",
            )
        )
    rss_name = f"projector peak RSS, {size_label(events)} events"
    rss = sample.peak_rss_bytes / MIB
    raw_rss = median([r for _, r in raw]) / MIB
    rows.append(make_row(rss_name, rss, "MiB", "raw consume peak RSS", raw_rss))
    if quix[True]:
        quix_rss = median([r for _, r in quix[True]]) / MIB
        rows.append(
            make_row(rss_name, rss, "MiB", "Quix Streams peak RSS (changelog on)", quix_rss)
        )
    return rows


def rebuild(ctx: BenchContext) -> list[Row]:
    """A fresh state dir folding the whole 1M-event log, against raw consume of that log."""
    from benchmarks.bench_limits import consume_once
    from benchmarks.bench_scaling import log_sizes, log_topic, measure_projector, size_label

    events = log_sizes(ctx.quick)[-1]
    label, batches = log_topic(events)
    sample = measure_projector(ctx, label, batches)
    topic, _ = ctx.topic(label, batches)
    raw = median([consume_once(ctx, topic, events).result["seconds"] for _ in range(ctx.repeats)])
    ctx.note(
        _target(
            ctx,
            f"rebuild of {size_label(events)} events ≤ 10 s",
            sample.seconds <= TARGET_REBUILD_SECONDS,
            f"{sample.seconds:.1f} s",
        )
    )
    return [
        make_row(
            f"rebuild: {size_label(events)} events into a fresh state dir",
            sample.seconds,
            "s",
            "raw consume of the same log",
            raw,
        )
    ]


def _target(ctx: BenchContext, what: str, met: bool, figure: str) -> str:
    caveat = "; quick-mode sizes, start-up dominated: indicative only" if ctx.quick else ""
    return f"target {what}: {'met' if met else 'MISSED'} ({figure}{caveat})"


# --- areas ------------------------------------------------------------------------------------


def _module(area: str) -> ModuleType | None:
    try:
        return importlib.import_module(MODULES[area])
    except ModuleNotFoundError as error:
        if error.name and MODULES[area].startswith(error.name):
            return None
        raise


def call_run(area: str, run: Callable[..., Any], ctx: BenchContext) -> list[Row]:
    """Call an area's `run`, passing what its signature asks for by name."""
    offered: dict[str, Any] = {
        "ctx": ctx,
        "context": ctx,
        "bootstrap": ctx.bootstrap,
        "bootstrap_servers": ctx.bootstrap,
        "quick": ctx.quick,
        "repeats": ctx.repeats,
        "workdir": ctx.workdir,
    }
    for name, (full, quick) in AREA_ARGUMENTS.get(area, {}).items():
        offered[name] = quick if ctx.quick else full
    kwargs = {}
    for name, parameter in inspect.signature(run).parameters.items():
        if name in offered:
            kwargs[name] = offered[name]
        elif parameter.default is inspect.Parameter.empty and parameter.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            raise TypeError(f"{run.__module__}.run needs {name!r}, which the suite cannot give")
    rows = [_as_row(row) for row in run(**kwargs)]
    kept = []
    for row in rows:
        if row["reference"] and "target" in row["reference"].lower():
            ctx.note(target_note(row))
        else:
            kept.append(row)
    return kept


def target_note(row: Row) -> str:
    """A target an area returned as a reference: typed in, not measured, so it is a note.

    Rates (`.../s`) aim high, everything else (latencies, sizes) aims low.
    """
    goal = row["reference_value"] or 0.0
    higher = row["unit"].endswith("/s")
    met = row["value"] >= goal if higher else row["value"] <= goal
    sign = "≥" if higher else "≤"
    return (
        f"target {row['name']} {sign} {format_number(goal)} {row['unit']}: "
        f"{'met' if met else 'MISSED'} ({format_number(row['value'])})"
    )


def _as_row(row: Any) -> Row:
    data = dict(row)
    return make_row(
        str(data["name"]),
        float(data["value"]),
        str(data["unit"]),
        data.get("reference"),
        None if data.get("reference_value") is None else float(data["reference_value"]),
    )


def run_area(area: str, ctx: BenchContext) -> list[Row]:
    """The rows of one area; the suite's own projector comparisons join bench_projector's."""
    rows: list[Row] = []
    if area == "projector":
        rows += projector_versus(ctx)
        rows += rebuild(ctx)
    module = _module(area)
    if module is None:
        ctx.note(f"skipped: {MODULES[area]} not available")
        return rows
    return rows + call_run(area, module.run, ctx)


# --- output -----------------------------------------------------------------------------------


def load_average() -> str:
    """The 1-minute load average: the machine is shared, and load skews every figure."""
    return f"{os.getloadavg()[0]:.1f}"


def environment(broker: str, load_at_start: str) -> list[str]:
    """Where and with what the figures were measured."""
    memory = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    versions = [
        f"confluent-kafka {metadata.version('confluent-kafka')}",
        f"librdkafka {confluent_kafka.libversion()[0]}",
        f"fastavro {metadata.version('fastavro')}",
        f"rocksdict {metadata.version('rocksdict')}",
    ]
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions.append(f"quixstreams {metadata.version('quixstreams')}")
    return [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {os.cpu_count()} cores{memory}, {platform.system()} {platform.machine()}",
        f"python: {platform.python_version()}; {', '.join(versions)}",
        f"kafka: {broker}",
        f"load average (1 min): {load_at_start} at the start, {load_average()} at the end",
    ]


def print_table(console: Console, rows: Sequence[Row], title: str) -> None:
    """The rich table, never squeezed below one line per row (logs go to pipes too)."""
    console = Console(width=max(console.width, 200))
    table = Table(title=title, title_justify="left")
    for header in TABLE_HEADERS:
        numeric = header in ("value", "reference", "ratio")
        table.add_column(header, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*table_cells(row))
    console.print(table)


def markdown(rows: Sequence[Row], header: Sequence[str], notes: Sequence[str]) -> str:
    lines = [*(f"- {line}" for line in header), "", markdown_table(rows)]
    if notes:
        lines += [*(f"- {note}" for note in notes), ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="behest's benchmarks against the raw limits and Quix Streams, one table.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: under 2 minutes")
    parser.add_argument(
        "--only",
        action="append",
        choices=AREAS,
        metavar="AREA",
        help=f"run only this area (repeatable): {', '.join(AREAS)}",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help="write the Markdown table here instead of to stdout",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=720.0,
        help="seconds the suite may take; the optional 3M-event point runs only if it fits "
        "(default 720: room for the 3M-event point with 1 and 2 workers)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="repeats per measurement; the median is reported (default 3)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeats < 3:
        raise SystemExit("--repeats must be at least 3: the table reports medians")
    areas = [area for area in AREAS if not args.only or area in args.only]
    console = Console()
    log = console.log
    rows: list[Row] = []
    failed: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="behest-bench-"))
    started = time.monotonic()
    load_at_start = load_average()
    try:
        with kafka_broker(log) as (bootstrap, broker):
            ctx = BenchContext(
                bootstrap=bootstrap,
                quick=args.quick,
                workdir=workdir,
                repeats=args.repeats,
                log=log,
                started=started,
                budget=args.budget,
            )
            try:
                for area in areas:
                    log(f"[bold]{area}[/bold]")
                    try:
                        rows += run_area(area, ctx)
                    except Exception:
                        traceback.print_exc()
                        failed.append(area)
                        ctx.note(f"FAILED: {area} (traceback above); its rows are left out")
            finally:
                ctx.drop_topics()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    mode = "quick" if args.quick else "full"
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    header = [
        *environment(broker, load_at_start),
        f"command: `{command}` ({mode} mode, {elapsed:.0f} s)",
        f"each figure is the median of {args.repeats} runs; ratio = value ÷ reference",
    ]
    print_table(console, rows, "behest benchmarks")
    for line in [*header, *ctx.notes]:
        console.print(line, markup=False, highlight=False)
    text = markdown(rows, header, ctx.notes)
    if args.markdown:
        args.markdown.write_text(text)
        log(f"wrote {args.markdown}")
    else:
        sys.stdout.write("\n" + text)
    return 1 if failed else 0
