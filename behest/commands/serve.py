"""`behest serve`: the HTTP query API (`behest.read.http`) over one or more projections'
stores, beside a running projector (or, with --advertise, a cluster's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from behest.commands.options import (
    PROJECTION_HELP,
    Advertise,
    BootstrapServers,
    Format,
    GroupId,
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
from behest.config import Settings

if TYPE_CHECKING:
    from behest.read.query import RunStateQuery
    from behest.read.reader import ProjectionReader

__all__ = ["serve_command"]


def _wait_for_state(config: Settings, names: list[str], wait: float) -> None:
    """Wait until each projection's state exists: a server started beside a fresh projector
    (compose starts both at once) waits for it instead of exiting and being restarted."""
    import time

    deadline = time.monotonic() + wait
    for name in names:
        path = config.state_dir / name
        while not (path / "CURRENT").exists() and time.monotonic() < deadline:  # RocksDB's
            if wait:
                typer.echo(
                    f"waiting up to {wait:g} s for the projector's state at {path}", err=True
                )
                wait = 0.0  # say it once
            time.sleep(0.5)


def _open_readers(
    config: Settings, specs: list[str], wait: float
) -> tuple[RunStateQuery | None, list[ProjectionReader[Any]]]:
    """The run-state query (when run_state is among `specs`) and a reader per projection."""
    from behest.fold.catalog import load_projection
    from behest.read.query import RunStateQuery
    from behest.read.reader import ProjectionReader

    projections = [load_projection(spec) for spec in dict.fromkeys(specs)]
    _wait_for_state(config, [p.name for p in projections], wait)
    query = None
    readers: list[ProjectionReader[Any]] = []
    try:
        for projection in projections:
            if projection.name == "run_state" and query is None:
                query = RunStateQuery.open(config)
                readers.append(query.reader)
            else:
                readers.append(ProjectionReader.open(config, projection))
    except BaseException:
        for reader in readers:
            reader.close()
        raise
    return query, readers


def serve_command(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind; the default keeps the API on this host."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port to listen on."),
    projection: Annotated[
        list[str] | None,
        typer.Option(
            "--projection",
            help=PROJECTION_HELP + " Repeat to serve several (default: run_state, which "
            "also answers /runs).",
        ),
    ] = None,
    state_dir: StateDir = None,
    topic: Topic = None,
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0.0,
        help="Seconds to wait for the projector to create its state (0: fail at once).",
    ),
    ready_max_lag: float = typer.Option(
        30.0,
        "--ready-max-lag",
        envvar="BEHEST_READY_MAX_LAG",
        min=0.0,
        help="/readyz answers 503 when the projector is more seconds behind the log than "
        "this (env BEHEST_READY_MAX_LAG).",
    ),
    log_level: LogLevel = Level.info,
    log_format: LogFormat = Format.text,
    advertise: Advertise = None,
    group_id: GroupId = None,
    bootstrap_servers: BootstrapServers = None,
    standby_replicas: int = typer.Option(
        0, "--standby-replicas", min=0, help="With --advertise: partitions to keep warm copies of."
    ),
) -> None:
    """Serve the HTTP query API (OpenAPI at /openapi.json) beside a running projector;
    with --advertise, beside `behest project --advertise` processes of a cluster, answering
    for every run (see `behest node`)."""
    from rich.console import Console

    from behest.errors import BehestError
    from behest.read.health import ProjectorWatch
    from behest.read.server import serve

    config = settings(bootstrap_servers, topic, state_dir)
    setup_logging(log_level, log_format, Console(stderr=True))
    try:
        telemetry(config, "behest-serve")
        query, readers = _open_readers(config, projection or ["run_state"], wait)
    except BehestError as exc:
        raise fail(exc) from None
    routed = None
    if advertise is not None and query is not None:
        from behest.cluster.node import RoutedAPI

        routed = RoutedAPI(
            query,
            config,
            url=advertise,
            group_id=group_id or "behest.run_state",
            standby_replicas=standby_replicas,
        ).start()
    try:
        served = ", ".join(f"{r.name} ({r.store.path})" for r in readers)
        typer.echo(
            f"serving {served} of {config.topic} on http://{host}:{port} "
            "(OpenAPI: /openapi.json, docs: /docs); Ctrl-C stops",
            err=True,
        )
        serve(
            query,
            host=host,
            port=port,
            projections=readers,
            log_level=log_level.value,
            telemetry=config.otel,
            watch=ProjectorWatch.of(config.state_dir, readers[0].name, max_lag=ready_max_lag),
            wrap=None if routed is None else routed.wrap,
        )
    finally:
        if routed is not None:
            routed.close()
        for reader in readers:
            reader.close()
