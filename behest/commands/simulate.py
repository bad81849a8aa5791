"""`behest simulate`: realistic agent-run traffic to the event topic (`behest.local.simulate`)."""

from __future__ import annotations

import typer

from behest.commands.options import (
    BootstrapServers,
    Format,
    Level,
    LogFormat,
    LogLevel,
    Topic,
    fail,
    settings,
    setup_logging,
)

__all__ = ["simulate_command"]


def simulate_command(
    runs: int = typer.Option(100, "--runs", min=0, help="How many agent runs to simulate."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Runs in progress at once."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the same traffic again."),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    log_level: LogLevel = Level.info,
    log_format: LogFormat = Format.text,
) -> None:
    """Produce realistic agent-run traffic (half via confluent-kafka, half via aiokafka)."""
    from rich.console import Console
    from rich.table import Table

    from behest.errors import BehestError
    from behest.local.simulate import simulate

    config = settings(bootstrap_servers, topic)
    setup_logging(log_level, log_format, Console(stderr=True))
    try:
        summary = simulate(config, runs, concurrency=concurrency, seed=seed, progress=progress)
    except BehestError as exc:
        raise fail(exc) from None
    console = Console()
    console.print(
        f"produced [bold]{summary.events}[/] events of {summary.runs} runs to "
        f"{config.topic} at {config.bootstrap} in {summary.seconds:.1f} s "
        f"({summary.events_per_second:,.0f} events/s; seed {summary.seed})"
    )
    statuses = Table("status", "runs", title="runs by outcome", title_justify="left")
    for status, count in summary.statuses.items():
        statuses.add_row(status, str(count))
    console.print(statuses)
    positions = Table("partition", "last offset", title="last delivery", title_justify="left")
    for partition, delivery in summary.last_delivery.items():
        positions.add_row(str(partition), str(delivery.offset))
    console.print(positions)
    console.print("by producer: " + ", ".join(f"{k} {v}" for k, v in summary.by_producer.items()))
    if summary.run_ids:
        console.print(f"first run id: {summary.run_ids[0]}  (behest state RUN_ID)")
