"""`behest topics create`: the event topic, its dead-letter topic and its schemas topic."""

from __future__ import annotations

import typer

from behest.commands.options import BootstrapServers, Topic, fail, settings

__all__ = ["topics_app"]

topics_app = typer.Typer(
    help="Manage the event topic and its dead-letter and schemas topics.", no_args_is_help=True
)


@topics_app.command("create")
def topics_create(
    partitions: int = typer.Option(6, "--partitions", min=1, help="Partitions of new topics."),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Create the event topic, its dead-letter topic (infinite retention) and its compacted
    schemas topic; idempotent."""
    from behest.admin import create_topics
    from behest.errors import BehestError

    config = settings(bootstrap_servers, topic)
    try:
        results = create_topics(config, partitions=partitions, timeout=timeout)
    except BehestError as exc:
        raise fail(exc) from None
    for result in results:
        typer.echo(f"{result} at {config.bootstrap}")
    for result in results:
        if result.name == config.schemas_topic:
            continue  # one partition by design
        if not result.created and result.partitions != partitions:
            typer.echo(
                f"note: {result.name} keeps its {result.partitions} partitions "
                f"(asked for {partitions}); existing topics are not changed",
                err=True,
            )
