"""The `behest` command line: broker, topics, simulate, project, serve, state, demo."""

from __future__ import annotations

import typer

from behest.config import Settings

app = typer.Typer(
    name="behest",
    help="Event sourcing for AI agent runs on Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
broker_app = typer.Typer(
    help="Run a local single-node Kafka (KRaft) on 127.0.0.1.", no_args_is_help=True
)
topics_app = typer.Typer(
    help="Manage the event topic and its dead-letter topic.", no_args_is_help=True
)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")


def settings() -> Settings:
    """Settings from the environment (flags override per command)."""
    return Settings()


# --- broker -----------------------------------------------------------------

_DATA_DIR_HELP = "The broker's data dir (it identifies the broker); default: .cache/broker."


def _default_broker_port() -> int:
    """behest.config.DEFAULT_BROKER_PORT, imported here to keep this section self-contained."""
    from behest.config import DEFAULT_BROKER_PORT

    return DEFAULT_BROKER_PORT


def _echo_progress(message: str) -> None:
    """Progress of a slow step (the first jar download) goes to stderr."""
    typer.echo(message, err=True)


def _broker_failed(exc: Exception) -> typer.Exit:
    """Print a BrokerError (no traceback) and give the exit to raise."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@broker_app.command("start")
def broker_start(
    port: int = typer.Option(
        _default_broker_port(), "--port", help="Port on 127.0.0.1 for clients; 0 picks a free one."
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Start a local Kafka (idempotent); prints its bootstrap address on stdout."""
    import time

    from behest.broker import LocalBroker
    from behest.errors import BehestError

    broker = LocalBroker(data_dir, progress=_echo_progress)
    started = time.monotonic()
    try:
        status = broker.start(port, timeout=timeout)
    except (BehestError, OSError) as exc:
        raise _broker_failed(exc) from None
    if status.already_running:
        note = "already running"
    else:
        note = f"Kafka {broker.kafka_version} started in {time.monotonic() - started:.1f} s"
    typer.echo(f"{note}: pid {status.pid}, data dir {status.data_dir}", err=True)
    typer.echo(status.bootstrap)


@broker_app.command("stop")
def broker_stop(
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Stop the local Kafka of a data dir (SIGTERM, then SIGKILL after 20 s)."""
    from behest.broker import LocalBroker
    from behest.errors import BehestError

    broker = LocalBroker(data_dir)
    pid = broker.status().pid
    try:
        stopped = broker.stop()
    except (BehestError, OSError) as exc:
        raise _broker_failed(exc) from None
    if stopped:
        typer.echo(f"stopped: pid {pid}, data dir {broker.data_dir}")
    else:
        typer.echo(f"not running: data dir {broker.data_dir}")


@broker_app.command("status")
def broker_status(
    data_dir: str | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Say whether the local Kafka of a data dir runs (exit 0) or not (exit 1)."""
    from behest.broker import LocalBroker

    status = LocalBroker(data_dir).status()
    if not status.running:
        typer.echo(f"not running: data dir {status.data_dir}")
        raise typer.Exit(1)
    typer.echo(f"running at {status.bootstrap}: pid {status.pid}, data dir {status.data_dir}")


# --- topics -----------------------------------------------------------------

# --- simulate ---------------------------------------------------------------

# --- project ----------------------------------------------------------------

# --- serve / state ----------------------------------------------------------

# --- demo -------------------------------------------------------------------
