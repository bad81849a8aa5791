"""`behest state RUN_ID`: one state, now, as of a time or at a sequence: a run's as a
table, any projection's as JSON (`behest.read.projection_query`)."""

from __future__ import annotations

import typer

from behest.commands.options import PROJECTION_HELP, StateDir, Topic, fail, settings

__all__ = ["state_command"]


def state_command(
    run_id: str = typer.Argument(..., help="The run id (a UUID), or another projection's key."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="RFC 3339 time, e.g. 2026-11-20T14:03:07Z: the state back then."
    ),
    at_sequence: int | None = typer.Option(
        None, "--at-sequence", help="The state after folding events up to this sequence."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the contract's JSON instead."),
    projection: str = typer.Option("run_state", "--projection", help=PROJECTION_HELP),
    state_dir: StateDir = None,
    topic: Topic = None,
) -> None:
    """Print one state: a run's (current, as of a time, or at a sequence), or, with
    --projection, the state of any projection under a key (printed as JSON)."""
    import orjson
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from behest.errors import BehestError
    from behest.events import KnownFinishReason, RunState
    from behest.fold.catalog import load_projection
    from behest.fold.projection import parse_key
    from behest.read.projection_query import ProjectionQuery
    from behest.read.reader import Absent, ProjectionReader
    from behest.times import format_time, parse_time

    config = settings(topic=topic, state_dir=state_dir)
    try:
        chosen = load_projection(projection)
        moment = None if as_of is None else parse_time(as_of)
        with ProjectionReader.open(config, chosen) as reader:
            query = ProjectionQuery(reader, reader.state_json or bytes)
            found = query.find_at(parse_key(chosen, run_id), as_of=moment, at_sequence=at_sequence)
    except BehestError as exc:
        raise fail(exc) from None
    if isinstance(found, Absent):
        point = f" as of {as_of}" if as_of else f" at sequence {at_sequence}"
        what = "run" if chosen.name == "run_state" else f"{chosen.name} key"
        why = (
            f"had no event{point}"
            if found is Absent.NOT_YET
            else f"is unknown in {config.state_dir}"
        )
        typer.echo(f"error: {what} {run_id} {why}", err=True)
        raise typer.Exit(1)
    if as_json or chosen.name != "run_state":
        typer.echo(found.decode())
        return
    data = found
    state = RunState.model_validate_json(data)
    colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}
    usage = state.total_usage
    finish = state.last_finish
    if finish is None:
        finish_text = "-"
    elif isinstance(finish, KnownFinishReason):
        finish_text = finish.value
    else:
        finish_text = f"unknown: {finish.unknown}"
    table = Table(show_header=False, title=f"run {state.run_id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("status", f"[{colour.get(state.status.value, 'cyan')}]{state.status.value}[/]"),
        ("session", str(state.session_id or "-")),
        ("provider / model", f"{state.provider or '-'} / {state.model or '-'}"),
        ("iteration", str(state.iteration)),
        (
            "tokens in / out / total",
            f"{usage.input_tokens:,} / {usage.output_tokens:,} / {usage.total_tokens:,}",
        ),
        ("last finish", finish_text),
        ("last error", state.last_error or "-"),
        ("events / last sequence", f"{state.event_count} / {state.sequence}"),
        ("created", format_time(state.created_at)),
        ("updated", format_time(state.updated_at)),
        ("metadata", orjson.dumps(state.metadata).decode()),
    ]
    for name, value in rows:
        table.add_row(name, value if name == "status" else escape(value))
    if as_of or at_sequence is not None:
        table.caption = f"as of {as_of}" if as_of else f"at sequence {at_sequence}"
    Console().print(table)
