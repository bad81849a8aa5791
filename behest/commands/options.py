"""What the `behest` command and its subcommands share: the common options, the settings
they make, and how an error ends a command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from behest.config import Settings

__all__ = ["BootstrapServers", "StateDir", "Topic", "fail", "settings"]

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
