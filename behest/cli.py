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

# --- topics -----------------------------------------------------------------

# --- simulate ---------------------------------------------------------------

# --- project ----------------------------------------------------------------

# --- serve / state ----------------------------------------------------------

# --- demo -------------------------------------------------------------------
