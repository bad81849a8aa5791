"""`behest dlq list | show | replay`: the dead-letter topic from the command line.

The logic is `behest.dlq`; this module only parses options and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from behest.commands.options import BootstrapServers, fail, settings

__all__ = ["dlq_app"]

dlq_app = typer.Typer(
    help=(
        "Inspect dead letters (<topic>.dlq) and send chosen ones back after a fix. Reads stop "
        "at the end offsets of when the command starts."
    ),
    no_args_is_help=True,
)

T = TypeVar("T")

Topic = Annotated[
    str | None,
    typer.Option("--topic", help="The event topic (env BEHEST_TOPIC); dead letters: <topic>.dlq."),
]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for Kafka.")]


def _run(step: Callable[[], T]) -> T:
    """`step()`, with behest's errors as one line and exit 1."""
    from behest.errors import BehestError

    try:
        return step()
    except BehestError as exc:
        raise fail(exc) from None


@dlq_app.command("list")
def dlq_list(
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    timeout: Timeout = 10.0,
) -> None:
    """Count dead letters by error and by source partition."""
    from rich.console import Console
    from rich.table import Table

    from behest.dlq import read_letters, summarize

    config = settings(bootstrap_servers, topic)
    summary = summarize(_run(lambda: read_letters(config, timeout=timeout)))
    console = Console()
    if not summary.total:
        console.print(f"no dead letters in {config.dlq_topic} at {config.bootstrap}")
        return
    console.print(f"{summary.total} dead letters in {config.dlq_topic} at {config.bootstrap}")
    errors = Table("count", "error", "dead letters (PARTITION:OFFSET)", title="by error")
    for error, count in summary.by_error.most_common():
        where = summary.where[error]
        shown = ", ".join(where[:5]) + (f", … ({len(where) - 5} more)" if len(where) > 5 else "")
        errors.add_row(str(count), error, shown)
    console.print(errors)
    sources = Table("source partition", "count", title="by source partition")
    for source, count in sorted(summary.by_source.items()):
        sources.add_row(source, str(count))
    console.print(sources)
    console.print("one in full: behest dlq show PARTITION:OFFSET")


@dlq_app.command("show")
def dlq_show(
    position: str = typer.Argument(..., help="The dead letter, PARTITION:OFFSET (from list)."),
    limit: int = typer.Option(256, "--bytes", min=1, help="Bytes of key and value shown."),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    timeout: Timeout = 10.0,
) -> None:
    """Show one dead letter: its headers, key, and value as text and hex."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from behest.dlq import describe, parse_position, read_letters

    config = settings(bootstrap_servers, topic)
    wanted = _run(lambda: parse_position(position))
    letters = _run(lambda: read_letters(config, timeout=timeout))
    found = [letter for letter in letters if (letter.partition, letter.offset) == wanted]
    if not found:
        typer.echo(
            f"error: no dead letter at {position} in {config.dlq_topic}: "
            "`behest dlq list` shows where they are",
            err=True,
        )
        raise typer.Exit(1)
    table = Table(show_header=False, title=f"{config.dlq_topic} {position}", title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, text in describe(found[0], limit=limit):
        table.add_row(label, escape(text))
    Console().print(table)


@dlq_app.command("replay")
def dlq_replay(
    at: list[str] = typer.Option(  # noqa: B008 - typer's way to declare a repeatable option
        [], "--at", help="A dead letter to send back, PARTITION:OFFSET; repeatable."
    ),
    error: str | None = typer.Option(
        None, "--error", help="Only dead letters whose error contains this text."
    ),
    source_partition: int | None = typer.Option(
        None, "--source-partition", min=0, help="Only those from this event-topic partition."
    ),
    every: bool = typer.Option(
        False, "--all", help="Every dead letter: needed when no other choice is given."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be sent; send nothing."),
    bootstrap_servers: BootstrapServers = None,
    topic: Topic = None,
    timeout: Timeout = 30.0,
) -> None:
    """Send chosen dead letters back to the event topic after a fix (the choices combine).

    Safe to repeat: the projector skips an event it already folded (same run, sequence and
    bytes) and folds a late one in its place.
    """
    from behest.dlq import Selection, parse_position, read_letters, replay

    config = settings(bootstrap_servers, topic)
    selection = _run(
        lambda: Selection(frozenset(parse_position(p) for p in at), error, source_partition, every)
    )
    chosen = [x for x in _run(lambda: read_letters(config, timeout=timeout)) if selection(x)]
    if not chosen:
        typer.echo(f"no dead letter in {config.dlq_topic} matches: nothing sent", err=True)
        raise typer.Exit(1)
    if dry_run:
        for letter in chosen:
            typer.echo(f"would send {letter.position}: {letter.error}")
        return
    outcome = _run(lambda: replay(config, chosen, timeout=timeout))
    for position, partition, offset in outcome.sent:
        typer.echo(f"sent {position} to {config.topic}[{partition}]@{offset}")
    for position, why in outcome.skipped:
        typer.echo(f"skipped {position}: {why}", err=True)
    typer.echo(
        f"replayed {len(outcome.sent)} of {len(chosen)} dead letters; a running projector "
        "folds them (already folded events are skipped)",
        err=True,
    )
