"""`behest generations`: list a projection's generations, switch readers, roll back, drop.

A generation is one build of a projection from offset 0 (`behest.fold.layout`). `behest
project` builds a new one beside the served one for a new projection version or for
`--rebuild`, and switches readers to it once it has caught up; these commands show them
and move readers between them by hand.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from behest.commands.options import StateDir, fail
from behest.config import Settings

if TYPE_CHECKING:
    from behest.fold.layout import Layout

__all__ = ["generations_app"]

generations_app = typer.Typer(
    help="A projection's generations (blue/green builds): list, switch, rollback, drop.",
    no_args_is_help=True,
)

Projection = Annotated[
    str,
    typer.Option(
        "--projection", help="The projection: its name, or package.module:Class of your own."
    ),
]


def _layout(projection: str, state_dir: Path | None) -> Layout:
    from behest.errors import BehestError
    from behest.fold.catalog import load_projection
    from behest.fold.layout import Layout

    try:
        name = load_projection(projection).name
        settings = Settings() if state_dir is None else Settings(state_dir=state_dir)
    except BehestError as exc:
        raise fail(exc) from None
    return Layout.of(settings.state_dir, name)


def _generation(text: str) -> int:
    from behest.fold.layout import parse_generation

    number = parse_generation(text) or (int(text) if text.isdigit() and int(text) > 0 else None)
    if number is None:
        raise fail(ValueError(f"{text!r} is no generation: give one as g2 (or 2)"))
    return number


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return time.strftime("%m-%d %H:%M", time.localtime(moment))


@generations_app.command("list")
def list_command(projection: Projection = "run_state", state_dir: StateDir = None) -> None:
    """Each generation: its version, whether readers are served it, its partitions."""
    from rich.console import Console
    from rich.table import Table

    from behest.errors import BehestError

    layout = _layout(projection, state_dir)
    try:
        served = layout.current()
        manifests = layout.manifests()
    except BehestError as exc:
        raise fail(exc) from None
    if not manifests:
        typer.echo(f"no generations of {layout.name} in {layout.root}: run `behest project`")
        return
    table = Table(title=f"{layout.name} in {layout.root}")
    for column in ("generation", "version", "state", "partitions", "folding", "built", "ready"):
        table.add_column(column)
    for m in manifests:
        if m.generation == served:
            state = "[bold green]served[/]"
        elif m.rolled_back_at is not None:
            state = "rolled back from"
        elif m.ready:
            state = "ready (for rollback)"
        else:
            state = "[yellow]building[/]"
        stored = layout.stored_partitions(m.generation)
        owned = sorted(layout.owned_partitions(m.generation))
        table.add_row(
            m.name,
            str(m.version),
            state,
            f"{len(stored)} of {m.partitions}",
            ",".join(map(str, owned)) or "-",
            _when(m.created_at),
            _when(m.ready_at),
        )
    Console().print(table)


@generations_app.command("switch")
def switch_command(
    generation: str = typer.Argument(..., help="The generation to serve, e.g. g2."),
    projection: Projection = "run_state",
    state_dir: StateDir = None,
) -> None:
    """Serve a generation to readers now (they follow within a fraction of a second)."""
    from behest.errors import BehestError

    layout = _layout(projection, state_dir)
    try:
        manifest = layout.switch(_generation(generation))
    except BehestError as exc:
        raise fail(exc) from None
    typer.echo(f"{layout.name}: readers are served {manifest.name} (version {manifest.version})")


@generations_app.command("rollback")
def rollback_command(projection: Projection = "run_state", state_dir: StateDir = None) -> None:
    """Serve the previous ready generation again (the newer one stays until dropped)."""
    from behest.errors import BehestError

    layout = _layout(projection, state_dir)
    try:
        left = layout.current()
        manifest = layout.rollback()
    except BehestError as exc:
        raise fail(exc) from None
    typer.echo(
        f"{layout.name}: readers are served {manifest.name} (version {manifest.version}) "
        f"again, not g{left}; run that version's projector to keep it current"
    )


@generations_app.command("drop")
def drop_command(
    generation: str = typer.Argument(..., help="The generation to delete, e.g. g1."),
    projection: Projection = "run_state",
    state_dir: StateDir = None,
) -> None:
    """Delete a generation readers are not served (its disk space comes back)."""
    from behest.errors import BehestError

    layout = _layout(projection, state_dir)
    number = _generation(generation)
    try:
        layout.drop(number)
    except BehestError as exc:
        raise fail(exc) from None
    typer.echo(f"{layout.name}: g{number} dropped")
