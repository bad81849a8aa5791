"""`behest project`: run a projection's projector (`behest.fold.projector`) with a live
progress line, optional Prometheus metrics, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from behest.commands.options import (
    PROJECTION_HELP,
    Advertise,
    BootstrapServers,
    Format,
    Level,
    LogFormat,
    LogLevel,
    StateDir,
    Topic,
    fail,
    settings,
    setup_logging,
    telemetry,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from behest.fold.engine import BatchResult

__all__ = ["project_command", "span_export"]


def project_command(
    until_caught_up: bool = typer.Option(
        False, "--until-caught-up", help="Stop once the log, as it was at start, is folded."
    ),
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="Fold the log from offset 0 into a new generation beside the served one; "
        "readers switch to it once it has caught up (`behest generations` lists them).",
    ),
    projection: str = typer.Option("run_state", "--projection", help=PROJECTION_HELP),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    state_dir: StateDir = None,
    group_id: str | None = typer.Option(
        None, "--group-id", help="Consumer group; default behest.<projection>."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Records per batch at most (default 5000)."
    ),
    session_timeout: float | None = typer.Option(
        None,
        "--session-timeout",
        min=1.0,
        help="Seconds of silence before the group moves this projector's partitions "
        "(env BEHEST_SESSION_TIMEOUT; default 10).",
    ),
    static_membership: bool | None = typer.Option(
        None,
        "--static-membership/--dynamic-membership",
        help="Rejoin as the same group member after a restart, taking the partitions back at "
        "once (env BEHEST_STATIC_MEMBERSHIP; default static).",
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        envvar="BEHEST_METRICS_PORT",
        min=0,
        max=65535,
        help="Serve Prometheus metrics on this port at /metrics (env BEHEST_METRICS_PORT; "
        "default: off).",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="Interface the metrics port binds."
    ),
    log_level: LogLevel = Level.info,
    log_format: LogFormat = Format.text,
    advertise: Advertise = None,
) -> None:
    """Fold the event log into RocksDB, exactly once; Ctrl-C stops after the batch in hand."""
    import gc
    import logging
    import signal
    import time
    from contextlib import nullcontext

    from rich.console import Console
    from rich.live import Live
    from rich.markup import render

    from behest.errors import BehestError, ConfigError
    from behest.fold.catalog import load_projection
    from behest.fold.projector import DEFAULT_BATCH_SIZE, Projector, ProjectorMetrics

    try:
        chosen = load_projection(projection)
    except BehestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    config = settings(bootstrap_servers, topic, state_dir)
    membership = {"session_timeout": session_timeout, "static_membership": static_membership}
    config = config.model_copy(update={k: v for k, v in membership.items() if v is not None})
    if advertise is not None:  # a split deployment: `behest serve --advertise` routes by it
        from behest.cluster.node import node_settings

        config = node_settings(config, advertise)
    try:
        telemetry(config, f"behest-projector-{projection}")
    except BehestError as exc:
        raise fail(exc) from None
    console = Console(stderr=True)
    setup_logging(log_level, log_format, console)
    log = logging.getLogger("behest.project")
    # the live line and rich text on a terminal; log lines (text or JSON) elsewhere
    live = None
    if console.is_terminal and log_format is Format.text:
        live = Live(console=console, refresh_per_second=4)

    def say(markup: str) -> None:
        if live is not None:
            console.print(markup)
        else:
            log.info("%s", render(markup).plain)

    started = time.monotonic()
    rate = {"at": started, "folded": 0, "per_second": 0.0, "printed": started}

    def line(metrics: ProjectorMetrics) -> str:
        return (
            f"[bold]{metrics.projection}[/] folded {metrics.events_folded:,} events · "
            f"{rate['per_second']:,.0f} ev/s · lag {metrics.total_lag:,} · "
            f"dead letters {metrics.dead_letters:,} · duplicates {metrics.duplicates:,} · "
            f"gaps {metrics.gaps:,} · partitions {list(metrics.assigned)}"
        )

    def progress(metrics: ProjectorMetrics) -> None:
        """The live line on a terminal; elsewhere (logs, pipes) a line every 10 s."""
        now = time.monotonic()
        if now - rate["at"] >= 1.0:
            rate["per_second"] = (metrics.events_folded - rate["folded"]) / (now - rate["at"])
            rate["at"], rate["folded"] = now, metrics.events_folded
        if live is not None:
            live.update(line(metrics))
        elif now - rate["printed"] >= 10.0:
            rate["printed"] = now
            say(line(metrics))

    try:
        projector = Projector(
            config,
            chosen,
            group_id=group_id,
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            on_progress=progress,
            on_batch=span_export() if chosen.name == "otel" else None,
        )
    except BehestError as exc:
        raise fail(exc) from None
    exporter = None
    if metrics_port is not None:
        from behest.read.metrics import ProjectorExporter

        try:
            exporter = ProjectorExporter(lambda: projector.metrics, metrics_host, metrics_port)
        except OSError as exc:
            projector.close()
            why = f"cannot serve metrics on {metrics_host}:{metrics_port} ({exc.strerror})"
            raise fail(ConfigError(f"{why}: choose a free --metrics-port")) from None

    def stop(signum: int, _frame: object) -> None:
        say(f"{signal.Signals(signum).name}: finishing the batch in hand…")
        projector.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    member = f"static member {projector.instance_id}" if projector.instance_id else "dynamic member"
    try:
        with projector, live or nullcontext():
            say(
                f"projecting {config.topic!r} at {config.bootstrap} into {projector.path} "
                f"(group {projector.group_id}, {member}, "
                f"session timeout {config.session_timeout:g} s)"
                + (f"; metrics at {exporter.url}" if exporter else "")
            )
            # As `behest serve` does: a full collection over the start-up objects paused the
            # fold for 40-80 ms every few seconds, which every live reader waited out.
            gc.collect()
            gc.freeze()
            if rebuild:
                metrics = projector.rebuild(until_caught_up=until_caught_up)
            else:
                metrics = projector.run(until_caught_up=until_caught_up)
    except BehestError as exc:
        raise fail(exc) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if exporter is not None:
            exporter.close()
    elapsed = time.monotonic() - started
    say(
        f"{'caught up' if until_caught_up else 'stopped cleanly'}: read "
        f"{metrics.records:,} records in {elapsed:.1f} s "
        f"({metrics.records / max(elapsed, 1e-9):,.0f}/s), folded "
        f"{metrics.events_folded:,} events; {metrics.dead_letters:,} dead letters, "
        f"{metrics.duplicates:,} duplicates, {metrics.gaps:,} gaps, "
        f"{metrics.late_repaired:,} late repaired"
    )


def span_export() -> Callable[[BatchResult], None]:
    """The otel projection's effect: each batch's finished runs, as GenAI spans, over OTLP
    (`OTEL_EXPORTER_OTLP_ENDPOINT`; behest[otel])."""
    from behest.errors import ConfigError
    from behest.projections.otel import export_runs

    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            "the otel projection exports over OTLP: pip install 'behest[otel]'"
        ) from None
    exporter = OTLPSpanExporter()

    def export(result: BatchResult) -> None:
        export_runs(result.states.values(), exporter)

    return export
