"""`behest demo`: the main job end to end on this machine (`behest.local.demo`)."""

from __future__ import annotations

import typer

from behest.commands.options import BootstrapServers, StateDir, Topic, fail, settings

__all__ = ["demo_command"]


def demo_command(
    runs: int = typer.Option(300, "--runs", min=1, help="Agent runs to simulate."),
    concurrency: int = typer.Option(48, "--concurrency", min=1, help="Runs in flight at once."),
    partitions: int = typer.Option(6, "--partitions", min=1, help="Partitions of a new topic."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the simulated traffic."),
    port: int = typer.Option(8000, "--port", help="HTTP API port (a free one if taken)."),
    keep_running: bool = typer.Option(
        False, "--keep-running", help="Keep the broker, projector and API up until Ctrl-C."
    ),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    state_dir: StateDir = None,
) -> None:
    """The main job end to end: broker, topic, traffic, projection, queries, HTTP."""
    import logging

    from behest.errors import BehestError
    from behest.local.demo import run_demo

    for name in ("behest.librdkafka", "behest.emit.producer.librdkafka"):  # transient retries
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        run_demo(
            settings(bootstrap_servers, topic, state_dir),
            runs=runs,
            concurrency=concurrency,
            partitions=partitions,
            seed=seed,
            port=port,
            keep_running=keep_running,
        )
    except BehestError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: stopped what the demo started", err=True)
        raise typer.Exit(130) from None
