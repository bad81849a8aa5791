"""The transport-free core of watching over HTTP (`behest.watching._Watch`): the lines of
Server-Sent Events to `RunUpdate`s, resumed across responses without gap or duplicate.
The sync and async transports around it run against a live server in
tests/integration/test_watch.py."""

from __future__ import annotations

import httpx
import orjson
import pytest

from behest.codec import decode_record, encode
from behest.errors import QueryError
from behest.events import AgentEvent
from behest.projections.run_state import RunStateProjection
from behest.watching import RECONNECTS, Message, _Watch, parse
from tests.unit.strategies import sample_events

PROJECTION = RunStateProjection()


def a_run() -> list[AgentEvent]:
    """A run from its start to its completion (sequences 0 to 13)."""
    events = sample_events()[:14]
    assert events[-1].payload.type == "RunCompleted"
    return events


def sse_lines(events: list[AgentEvent]) -> list[str]:
    """What the server sends for these events: each event, then the state after it."""
    lines: list[str] = [": keepalive", "retry: 1000", ""]
    state = None
    for event in events:
        state = PROJECTION.apply(state, decode_record(encode(event)))
        stored = PROJECTION.encode_state(state).decode()
        for kind, data in (("event", event.model_dump_json()), ("state", stored)):
            lines += [f"id: {event.sequence}", f"event: {kind}", f"data: {data}", ""]
    return lines


def updates(watch: _Watch, lines: list[str]) -> list[int]:
    """The sequences of the updates `lines` give, up to the end of the run."""
    assert not watch.refused(200)
    seen = []
    for line in lines:
        update = watch.line(line)
        if update is not None:
            assert update.event is not None and update.event.sequence == update.sequence
            assert update.state.sequence == update.sequence
            seen.append(update.sequence)
        if watch.done:
            break
    return seen


def test_parse_reads_messages_and_skips_comments_and_hints() -> None:
    lines = [
        ": hi",
        "retry: 5",
        "event: state",
        "data: a",
        "data: b",
        "id: 3",
        "",
        "",
        "data: x",
        "",
    ]
    assert list(parse(lines)) == [Message("state", "a\nb", "3"), Message("message", "x", "3")]


def test_each_event_comes_with_the_state_after_it_until_the_run_ends() -> None:
    events = a_run()
    watch = _Watch("http://node", None)
    assert updates(watch, sse_lines(events)) == [e.sequence for e in events]
    assert watch.done  # the last event ends the run
    watch.ended()  # a response ending after the run did is no failure


def test_a_resumed_stream_has_no_gap_and_no_duplicate() -> None:
    events = a_run()
    lines = sse_lines(events)
    watch = _Watch("http://node", from_sequence=2)
    assert watch.headers() == {"Last-Event-ID": "1"}
    cut = len(lines) // 2
    first = updates(watch, lines[:cut])
    with pytest.raises(httpx.RemoteProtocolError):  # the connection dropped mid-run
        watch.ended()
    assert watch.headers() == {"Last-Event-ID": str(first[-1])}
    second = updates(watch, lines)  # the server replays from the start: only news counts
    assert first + second == [e.sequence for e in events][2:]


def test_nothing_to_watch_and_refusals() -> None:
    watch = _Watch("http://node", None)
    assert not watch.refused(204) and watch.done  # 204: the run is over already
    assert _Watch("http://node", None).refused(404)
    deleted = _Watch("http://node", None)
    deleted.message(Message("deleted", "{}"))
    assert deleted.done


def test_reconnects_back_off_and_give_up_after_too_many_failures_in_a_row() -> None:
    watch = _Watch("http://node", None)
    error = httpx.ConnectError("refused")
    waits = [watch.failed(error) for _ in range(RECONNECTS)]
    assert waits == sorted(waits) and max(waits) <= 2.0
    with pytest.raises(QueryError, match=r"http://node dropped the watch 6 times in a row"):
        watch.failed(error)
    fresh = _Watch("http://node", None)
    fresh.failed(error)
    updates(fresh, sse_lines(a_run()[:1]))  # a message resets the count
    assert fresh.failures == 0


def test_the_state_data_is_the_stored_json() -> None:
    events = a_run()[:3]
    lines = sse_lines(events)
    watch = _Watch("http://node", None)
    assert not watch.refused(200)
    last = None
    for line in lines:
        last = watch.line(line) or last
    assert last is not None
    assert last.state.to_json_dict() == orjson.loads(lines[-2].removeprefix("data: "))
