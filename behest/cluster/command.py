"""`behest node`: the command that runs one full instance (contract §3 and §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from behest.config import Settings

__all__ = ["node_command"]


def node_command(
    workers: int = typer.Option(
        0, "--workers", min=0, help="Projector worker processes (default: one per core)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface the HTTP API binds."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port of the HTTP API."),
    advertise: str | None = typer.Option(
        None,
        "--advertise",
        help="URL the other nodes reach this one at (default http://HOST:PORT).",
    ),
    standby_replicas: int = typer.Option(
        0, "--standby-replicas", min=0, help="Other partitions to keep warm copies of."
    ),
    group_id: str | None = typer.Option(
        None, "--group-id", help="Consumer group; default behest.run_state."
    ),
    bootstrap_servers: str | None = typer.Option(
        None, "--bootstrap-servers", help="Kafka bootstrap servers (env BEHEST_BOOTSTRAP_SERVERS)."
    ),
    topic: str | None = typer.Option(None, "--topic", help="The event topic (env BEHEST_TOPIC)."),
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="This node's RocksDB folder (env BEHEST_STATE_DIR)."),
    ] = None,
    session_timeout: float | None = typer.Option(
        None,
        "--session-timeout",
        min=1.0,
        help="Seconds of silence before the group moves a dead node's partitions "
        "(env BEHEST_SESSION_TIMEOUT; default 10).",
    ),
    log_level: str | None = typer.Option(
        None, "--log-level", help="debug, info, warning or error (env BEHEST_LOG_LEVEL)."
    ),
    log_format: str | None = typer.Option(
        None, "--log-format", help="text, or json lines (env BEHEST_LOG_FORMAT)."
    ),
) -> None:
    """A full instance: projector workers in the consumer group and the HTTP API, which
    answers for every run (from this node's state, or forwarded to the run's owner)."""
    from behest.cluster.node import run_node, worker_count
    from behest.errors import BehestError
    from behest.logs import setup_logging_from_env

    try:
        setup_logging_from_env(log_level, log_format)  # the workers inherit it
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    flags = {
        "bootstrap_servers": bootstrap_servers,
        "topic": topic,
        "state_dir": state_dir,
        "session_timeout": session_timeout,
    }
    config = Settings().model_copy(update={k: v for k, v in flags.items() if v is not None})
    count = worker_count(workers)

    def ready(url: str) -> None:
        typer.echo(
            f"node {url}: {count} worker(s) folding {config.topic!r} at {config.bootstrap} "
            f"into {config.state_dir}; HTTP API on {host}:{port}; Ctrl-C stops",
            err=True,
        )

    try:
        status = run_node(
            config,
            workers=count,
            host=host,
            port=port,
            advertise=advertise,
            standby_replicas=standby_replicas,
            group_id=group_id,
            on_ready=ready,
        )
    except BehestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(status)
