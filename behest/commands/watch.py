"""`behest watch RUN_ID`: a live terminal view of one run, drawn with rich.

    status, iteration and tokens          (the state after the latest event)
    the model's text, assembled           (the current turn's TextDeltas)
    the latest events                     (one line each: what happened)

`RunView` is pure presentation: feed it `RunUpdate`s (from `query.watch` or
`client.watch`, alike) and render it; `show` drives a `rich.live.Live` until the run ends.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable
from typing import Any, Final

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from behest.commands.options import StateDir, Topic, fail, settings
from behest.events import (
    AgentEvent,
    KnownFinishReason,
    RunState,
    ToolExecutionFailure,
    Variant,
)
from behest.watching import RunUpdate

__all__ = ["RunView", "show", "summary", "watch_command"]

LATEST: Final = 12
"""Events listed under the text."""

TEXT_LINES: Final = 12
"""Lines of the current turn's text shown (its end)."""

_COLOURS: Final = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "calling_model": "magenta",
    "waiting_for_tools": "cyan",
}


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _tool_finished(p: Any) -> str:
    result = p.result
    outcome = (
        f"failed: {_short(result.error, 40)}"
        if isinstance(result, ToolExecutionFailure)
        else f"ok {_short(result.output, 40)}"
    )
    return f"tool {p.tool_name} {outcome} in {p.duration_ms} ms"


def _completed(p: Any) -> str:
    reason = p.finish_reason
    text = reason.value if isinstance(reason, KnownFinishReason) else f"unknown: {reason.unknown}"
    return f"completed ({text}) after {p.iterations} iterations"


_SUMMARIES: Final[dict[Variant, Callable[[Any], str]]] = {
    Variant.RUN_STARTED: lambda p: f"run started: {p.provider}/{p.model}",
    Variant.CONTEXT_BUILT: lambda p: f"context built: {p.message_count} messages",
    Variant.MODEL_STARTED: lambda p: f"model turn {p.iteration}: {p.provider}/{p.model}",
    Variant.TEXT_DELTA: lambda p: f"text {_short(p.delta, 50)!r}",
    Variant.TOOL_CALL_STARTED: lambda p: f"tool call: {p.tool_name} ({p.call_id})",
    Variant.TOOL_CALL_DELTA: lambda p: f"tool arguments +{_short(p.delta, 40)!r}",
    Variant.TOOL_CALL_COMPLETED: lambda p: (
        f"tool call {p.call.name}({_short(p.call.arguments, 50)})"
    ),
    Variant.TOOL_EXECUTION_STARTED: lambda p: f"tool running: {p.tool_name} ({p.call_id})",
    Variant.TOOL_EXECUTION_FINISHED: _tool_finished,
    Variant.ASSISTANT_MESSAGE_COMMITTED: lambda p: "assistant message committed",
    Variant.TOOL_MESSAGE_COMMITTED: lambda p: "tool message committed",
    Variant.USAGE_RECORDED: lambda p: (
        f"usage {p.usage.input_tokens:,} in, {p.usage.output_tokens:,} out"
    ),
    Variant.RUN_COMPLETED: _completed,
    Variant.RUN_FAILED: lambda p: f"failed: {_short(p.error)}",
    Variant.RUN_CANCELLED: lambda p: "cancelled",
    Variant.DOOM_LOOP_DETECTED: lambda p: f"doom loop detected: {_short(p.description)}",
    Variant.COMPACTION_CIRCUIT_OPENED: lambda p: (
        f"compaction circuit opened after {p.consecutive_failures} failures"
    ),
}
"""One line per payload variant, saying what an event of it did."""


def _sequence(event: AgentEvent) -> int:
    return event.sequence


def summary(event: AgentEvent) -> str:
    """One line saying what an event did."""
    return _SUMMARIES[event.variant](event.payload)


class RunView:
    """What the terminal shows of a run, updated one `RunUpdate` at a time."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.state: RunState | None = None
        self.turn = 0
        self.turn_start = -1
        self.deltas: list[tuple[int, str]] = []
        self.latest: list[AgentEvent] = []

    @property
    def text(self) -> str:
        """The current turn's text, its deltas in sequence order (a late one lands in place)."""
        return "".join(delta for _, delta in self.deltas)

    def feed(self, update: RunUpdate) -> None:
        self.state = update.state
        event = update.event
        if event is None:
            return
        sequence = event.sequence
        insort(self.latest, event, key=_sequence)
        del self.latest[:-LATEST]
        payload: Any = event.payload
        variant = event.variant
        if variant is Variant.MODEL_STARTED and sequence > self.turn_start:
            # a newer turn; deltas that came before their (late) ModelStarted stay in it
            self.turn, self.turn_start = payload.iteration, sequence
            self.deltas = [(s, d) for s, d in self.deltas if s > sequence]
        elif variant is Variant.TEXT_DELTA and sequence > self.turn_start:
            insort(self.deltas, (sequence, payload.delta))

    def render(self) -> RenderableType:
        return Group(self._header(), self._text(), self._events())

    def _header(self) -> RenderableType:
        state = self.state
        if state is None:
            return Panel(f"run {self.run_id}: waiting for its first event…", title="behest watch")
        colour = _COLOURS.get(state.status.value, "blue")
        usage = state.total_usage
        grid = Table.grid(padding=(0, 3))
        grid.add_row(
            f"[bold {colour}]{state.status.value}[/]",
            f"{escape(state.provider or '')}/{escape(state.model or '')}",
            f"iteration [bold]{state.iteration}[/]",
        )
        grid.add_row(
            f"tokens [bold]{usage.total_tokens:,}[/]",
            f"{usage.input_tokens:,} in · {usage.output_tokens:,} out",
            f"events {state.event_count} · sequence {state.sequence}",
        )
        if state.last_error:
            grid.add_row(f"[red]error: {escape(state.last_error)}[/]")
        return Panel(grid, title=f"run {self.run_id}", border_style=colour)

    def _text(self) -> RenderableType:
        lines = self.text.splitlines()[-TEXT_LINES:] or [""]
        title = f"model turn {self.turn}" if self.turn else "model text"
        return Panel(Text("\n".join(lines)), title=title, border_style="dim")

    def _events(self) -> RenderableType:
        table = Table(expand=True, box=None, show_header=True, header_style="dim")
        table.add_column("seq", justify="right", no_wrap=True)
        table.add_column("time", no_wrap=True)
        table.add_column("event", ratio=1, no_wrap=True, overflow="ellipsis")
        for event in self.latest:
            table.add_row(
                str(event.sequence),
                event.timestamp.strftime("%H:%M:%S.%f")[:12],
                escape(summary(event)),
            )
        return Panel(table, title="latest events", border_style="dim")


def show(run_id: str, updates: Iterable[RunUpdate], console: Console | None = None) -> RunView:
    """Draw `updates` live until they end (the run's terminal state); the last view."""
    view = RunView(run_id)
    with Live(view.render(), console=console, refresh_per_second=10, transient=False) as live:
        for update in updates:
            view.feed(update)
            live.update(view.render())
    return view


def watch_command(
    run_id: str = typer.Argument(..., help="The run id (a UUID); it need not exist yet."),
    url: str | None = typer.Option(
        None, "--url", help="Watch through a behest server (e.g. http://127.0.0.1:8000)."
    ),
    from_sequence: int | None = typer.Option(
        None, "--from-sequence", min=0, help="Replay the stored events from this sequence on."
    ),
    state_dir: StateDir = None,
    topic: Topic = None,
) -> None:
    """A live terminal view of one run (status, iteration, tokens, the model's text, the
    latest events) until it ends; from the state dir, or through a server with --url."""
    from behest.errors import BehestError
    from behest.events import parse_run_id

    try:
        run = parse_run_id(run_id)
        if url is not None:
            from behest.client import RunStateClient

            with RunStateClient(url) as client:
                show(str(run), client.watch(run, from_sequence=from_sequence))
        else:
            from behest.read.query import RunStateQuery

            with RunStateQuery.open(settings(topic=topic, state_dir=state_dir)) as query:
                show(str(run), query.watch(run, from_sequence=from_sequence))
    except BehestError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
