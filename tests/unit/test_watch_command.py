"""`behest watch`'s terminal view: what it shows after each update of a sample run."""

from __future__ import annotations

from rich.console import Console

from behest.codec import decode_record, encode
from behest.commands.watch import RunView, show, summary
from behest.events import PAYLOAD_TYPES, RunState, Variant
from behest.fold.projection import fold
from behest.projections.run_state import RunStateProjection
from behest.testing import sample_run
from behest.watching import RunUpdate
from tests.unit.strategies import sample_events

PROJECTION = RunStateProjection()


def _updates(seed: int) -> list[RunUpdate]:
    events = sample_run(events=30, seed=seed)
    updates = []
    for n, event in enumerate(events):
        state = fold(PROJECTION, [decode_record(encode(e)) for e in events[: n + 1]])
        assert state is not None
        data = PROJECTION.encode_state(state)
        updates.append(RunUpdate(event.sequence, RunState.model_validate_json(data), event))
    return updates


def _text(view: RunView) -> str:
    console = Console(record=True, width=100, color_system=None)
    console.print(view.render())
    return console.export_text()


def test_the_view_shows_status_tokens_assembled_text_and_latest_events() -> None:
    updates = _updates(3)
    run_id = str(updates[0].state.run_id)
    view = RunView(run_id)
    assert "waiting for its first event" in _text(view)
    for update in updates:
        view.feed(update)
    text = _text(view)
    last = updates[-1].state
    assert last.status.value in text
    assert f"{last.total_usage.total_tokens:,}" in text
    assert f"sequence {last.sequence}" in text
    turn = [u.event for u in updates if u.event and u.event.payload.type == "TextDelta"][-1]
    assert turn is not None and turn.payload.delta.strip() in text  # type: ignore[union-attr]
    for update in updates[-5:]:
        assert update.event is not None and summary(update.event)[:30] in text


def test_show_draws_until_the_updates_end() -> None:
    updates = _updates(4)
    console = Console(record=True, width=100, color_system=None, force_terminal=False)
    view = show(str(updates[0].state.run_id), updates, console=console)
    assert view.state == updates[-1].state


def test_every_variant_has_a_one_line_summary() -> None:
    events = sample_events()  # every variant, and both branches of each nested union
    payload_variants = {v for v in Variant if v.model in PAYLOAD_TYPES}
    assert {e.variant for e in events} == payload_variants
    lines = {e.sequence: summary(e) for e in events}
    assert all(line and "\n" not in line for line in lines.values())
    by_variant = {e.variant: lines[e.sequence] for e in events}
    assert by_variant[Variant.RUN_STARTED] == "run started: openai/gpt-4o"
    assert by_variant[Variant.RUN_CANCELLED] == "cancelled"
    assert by_variant[Variant.CONTEXT_BUILT] == "context built: 12 messages"
    outcomes = [lines[e.sequence] for e in events if e.variant is Variant.TOOL_EXECUTION_FINISHED]
    assert [" ok " in o for o in outcomes] == [True, False]  # success, then failure
    assert any(" failed: " in o for o in outcomes)
    reasons = [lines[e.sequence] for e in events if e.variant is Variant.RUN_COMPLETED]
    assert reasons[0].startswith("completed (stop)") and "(unknown: " in reasons[1]
    # no two variants read alike: each line says which thing happened
    assert len(set(by_variant.values())) == len(payload_variants)


def test_an_event_names_its_variant() -> None:
    for event in sample_events():
        assert event.variant.short_name == event.type
        assert isinstance(event.payload, event.variant.model)


def test_a_late_event_lands_in_place_in_the_text_and_the_latest_events() -> None:
    updates = _updates(2)
    in_order = RunView("run")
    for update in updates:
        in_order.feed(update)
    variants = [u.event.variant if u.event else None for u in updates]
    starts = [n for n, v in enumerate(variants) if v is Variant.MODEL_STARTED]
    last_turn = [n for n, v in enumerate(variants) if v is Variant.TEXT_DELTA and n > starts[-1]]
    assert len(last_turn) >= 2, "the sample's last turn streams its text in several deltas"
    for late in (last_turn[0], last_turn[1], starts[-1]):  # late deltas; a late ModelStarted
        shuffled = RunView("run")
        for update in updates[:late] + updates[late + 1 :] + [updates[late]]:
            shuffled.feed(update)
        assert shuffled.text == in_order.text
        assert shuffled.turn == in_order.turn
        assert [e.sequence for e in shuffled.latest] == [e.sequence for e in in_order.latest]
