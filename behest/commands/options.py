"""What the `behest` command and its subcommands share: the common options, the settings
they make, and how an error ends a command."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from behest.config import Settings

__all__ = [
    "PROJECTION_HELP",
    "Advertise",
    "BootstrapServers",
    "Format",
    "GroupId",
    "Level",
    "LogFormat",
    "LogLevel",
    "StateDir",
    "Topic",
    "fail",
    "settings",
    "setup_logging",
    "telemetry",
]

BootstrapServers = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka bootstrap servers (env BEHEST_BOOTSTRAP_SERVERS; default: the local broker).",
    ),
]
Topic = Annotated[
    str | None,
    typer.Option(
        "--topic", help="The event topic (env BEHEST_TOPIC; default: behest.agent-events)."
    ),
]
StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="The projections' RocksDB folder (env BEHEST_STATE_DIR)."),
]


def settings(
    bootstrap_servers: str | None = None, topic: str | None = None, state_dir: Path | None = None
) -> Settings:
    """Settings from the environment, with the command's flags on top; a bad value of
    either is one line on stderr and exit 1."""
    from behest.errors import ConfigError

    flags = {"bootstrap_servers": bootstrap_servers, "topic": topic, "state_dir": state_dir}
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ConfigError as exc:
        raise fail(exc) from None


def fail(exc: BaseException) -> typer.Exit:
    """Print an error (no traceback) to stderr and give the exit to raise."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


class Level(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class Format(StrEnum):
    text = "text"
    json = "json"


LogLevel = Annotated[
    Level,
    typer.Option(
        "--log-level",
        envvar="BEHEST_LOG_LEVEL",
        case_sensitive=False,
        help="Least severe log lines shown (env BEHEST_LOG_LEVEL).",
    ),
]
LogFormat = Annotated[
    Format,
    typer.Option(
        "--log-format",
        envvar="BEHEST_LOG_FORMAT",
        case_sensitive=False,
        help="text, or json: one object per line for log shippers (env BEHEST_LOG_FORMAT).",
    ),
]


def setup_logging(level: Level, log_format: Format, console: Any = None) -> None:
    """Logging of a long-running command (`behest.logs`): rich text on a terminal."""
    from behest.logs import setup_logging as setup

    handler = None
    if log_format is Format.text and console is not None and console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)
    setup(level.value, log_format.value, handler=handler)


PROJECTION_HELP = (
    "An installed projection's name (run_state, tool_usage, otel: each finished run exported "
    "as OpenTelemetry GenAI spans over OTLP, or one a package declares under "
    "the behest.projections entry points) or your own as package.module:Class."
)


Advertise = Annotated[
    str | None,
    typer.Option(
        "--advertise",
        help="URL of this process's HTTP API for the cluster's other nodes: the projector "
        "(`project`) puts it in its client.id, the API (`serve`) routes by it (see `behest node`).",
    ),
]
GroupId = Annotated[
    str | None, typer.Option("--group-id", help="Consumer group; default behest.<projection>.")
]


def telemetry(config: Settings, service: str) -> None:
    """With `BEHEST_OTEL=true`, this command exports its spans over OTLP."""
    if config.otel:
        from behest.telemetry import configure

        configure(service)
