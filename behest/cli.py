"""The `behest` command line: its commands and command groups, assembled from
`behest.commands` (each parses and prints; the logic lives beside what it works on)."""

from __future__ import annotations

from typing import Annotated

import typer

from behest.cluster.command import node_command
from behest.commands.broker import broker_app
from behest.commands.demo import demo_command
from behest.commands.dlq import dlq_app
from behest.commands.generations import generations_app
from behest.commands.project import project_command
from behest.commands.serve import serve_command
from behest.commands.simulate import simulate_command
from behest.commands.state import state_command
from behest.commands.topics import topics_app
from behest.commands.watch import watch_command

app = typer.Typer(
    name="behest",
    help="Event sourcing for AI agent runs on Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("simulate")(simulate_command)
app.command("project")(project_command)
app.command("serve")(serve_command)
app.command("node")(node_command)
app.command("state")(state_command)
app.command("watch")(watch_command)
app.command("demo")(demo_command)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(generations_app, name="generations")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"behest {version('behest')}")
        except PackageNotFoundError:  # a source checkout that was never installed
            typer.echo("behest 0+unknown")
        from behest.codec import implementation

        typer.echo(f"codec: {implementation()}")
        raise typer.Exit()


@app.callback()
def main(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print behest's version and exit.",
        ),
    ] = False,
) -> None:
    """Event sourcing for AI agent runs on Apache Kafka."""


if __name__ == "__main__":
    app()
