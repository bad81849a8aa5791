"""`behest broker start | stop | status`: a local Kafka (KRaft) on 127.0.0.1, one broker or
a cluster (`behest.local`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from behest.commands.options import fail
from behest.config import DEFAULT_BROKER_PORT

__all__ = ["broker_app"]

broker_app = typer.Typer(
    help="Run a local Kafka (KRaft) on 127.0.0.1: one broker, or a cluster with --nodes 3.",
    no_args_is_help=True,
)

_DATA_DIR_HELP = (
    "The broker's (or cluster's) data dir, which identifies it; default: .cache/broker "
    "(.cache/cluster with --nodes)."
)


def _echo_progress(message: str) -> None:
    """Progress of a slow step (the first jar download) goes to stderr."""
    typer.echo(message, err=True)


def _targets(data_dir: str | None) -> list[Any]:
    """The brokers and clusters a stop/status is about: the data dir's one, or by default
    the default broker, plus the default cluster if one was ever started."""
    from behest.local.broker import LocalBroker
    from behest.local.cluster import LocalCluster, default_cluster_dir, is_cluster_dir

    if data_dir is not None:
        folder = Path(data_dir)
        return [LocalCluster(folder) if is_cluster_dir(folder) else LocalBroker(folder)]
    found: list[Any] = [LocalBroker()]
    if is_cluster_dir(default_cluster_dir()):
        found.append(LocalCluster())
    return found


@broker_app.command("start")
def broker_start(
    port: int | None = typer.Option(
        None,
        "--port",
        help=f"Port on 127.0.0.1 for clients (default {DEFAULT_BROKER_PORT}; a cluster's nodes "
        "take this one and the next ones, from 9093 by default); 0 picks free ones.",
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    nodes: int = typer.Option(
        1, "--nodes", min=1, max=9, help="Brokers: 3 starts a local KRaft cluster (RF 3)."
    ),
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Start a local Kafka (idempotent); prints its bootstrap address on stdout."""
    import time

    from behest.errors import BehestError
    from behest.local.broker import LocalBroker
    from behest.local.cluster import LocalCluster, is_cluster_dir
    from behest.local.runtime import KAFKA_VERSION

    started = time.monotonic()
    try:
        if nodes > 1 or (data_dir is not None and is_cluster_dir(Path(data_dir))):
            cluster = LocalCluster(data_dir, nodes=nodes, progress=_echo_progress)
            status: Any = cluster.start(port, timeout=timeout)
        else:
            broker = LocalBroker(data_dir, progress=_echo_progress)
            status = broker.start(DEFAULT_BROKER_PORT if port is None else port, timeout=timeout)
    except (BehestError, OSError) as exc:
        raise fail(exc) from None
    if status.already_running:
        note = "already running"
    else:
        note = f"Kafka {KAFKA_VERSION} started in {time.monotonic() - started:.1f} s"
    typer.echo(f"{note}: {_pids(status)}, data dir {status.data_dir}", err=True)
    typer.echo(status.bootstrap)


@broker_app.command("stop")
def broker_stop(
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Stop the local Kafka of a data dir (SIGTERM, then SIGKILL after 20 s)."""
    from behest.errors import BehestError

    for target in _targets(data_dir):
        pids = _pids(target.status())
        try:
            stopped = target.stop()
        except (BehestError, OSError) as exc:
            raise fail(exc) from None
        if stopped:
            typer.echo(f"stopped: {pids}, data dir {target.data_dir}")
        else:
            typer.echo(f"not running: data dir {target.data_dir}")


def _pids(status: Any) -> str:
    """`pid N` of a broker, `node 1 pid N, node 2 down, ...` of a cluster."""
    if not hasattr(status, "nodes"):
        return f"pid {status.pid}"
    return ", ".join(
        f"node {n} pid {pid}" if pid else f"node {n} down" for n, pid in status.nodes.items()
    )


@broker_app.command("status")
def broker_status(
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Say whether the local Kafka of a data dir runs (exit 0) or not (exit 1)."""
    running = False
    for target in _targets(data_dir):
        status = target.status()
        if not status.running:
            typer.echo(f"not running: data dir {status.data_dir}")
            continue
        running = True
        typer.echo(f"running at {status.bootstrap}: {_pids(status)}, data dir {status.data_dir}")
    if not running:
        raise typer.Exit(1)
