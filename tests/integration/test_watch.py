"""Watching runs live, end to end: events produced through the real broker, folded by a
running `Projector`, watched in-process (`query.watch`) and over HTTP (`/runs/{id}/watch`).

Every expectation is the plain fold of what was produced: each watcher must see each event
exactly once, in order, with the state after it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from live_api import WAIT, Live, expected, running_api

from behest.client import RunStateClient
from behest.config import Settings
from behest.errors import InvalidQueryError
from behest.events import AgentEvent, RunState
from behest.read.watch import tailer_of
from behest.testing import sample_run
from behest.watching import Message, RunUpdate, parse


@pytest.fixture
def live(settings: Settings, unique_group: str) -> Iterator[Live]:
    with running_api(settings, unique_group) as api:
        yield api


def _fold_states(events: Sequence[AgentEvent]) -> list[dict[str, Any] | None]:
    return [expected(events[: n + 1]) for n in range(len(events))]


def _check_updates(updates: Sequence[RunUpdate], events: Sequence[AgentEvent], first: int) -> None:
    """`updates` hold exactly events[first:], in order, each with the state after it."""
    states = _fold_states(events)
    assert [u.sequence for u in updates] == list(range(first, len(events)))
    for update in updates:
        assert update.event == events[update.sequence]
        assert update.state.model_dump(mode="json") == _json(states[update.sequence])


def _json(state: dict[str, Any] | None) -> Any:
    return RunState.model_validate(state).model_dump(mode="json")


def _collect(
    live: Live, run_id: uuid.UUID, **kwargs: Any
) -> tuple[threading.Thread, list[RunUpdate]]:
    got: list[RunUpdate] = []

    def work() -> None:
        got.extend(live.query.watch(run_id, **kwargs))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, got


def test_a_watcher_connected_mid_run_gets_every_later_event_once_in_order(live: Live) -> None:
    events = sample_run(events=40, seed=11)
    live.emit_and_wait(events[:15])
    thread, got = _collect(live, events[0].run_id)
    live.emit(events[15:])
    thread.join(WAIT)
    assert not thread.is_alive(), "the watch did not end after the terminal state"
    opening, rest = got[0], got[1:]
    assert opening.event is None and opening.sequence >= 14
    assert opening.state.model_dump(mode="json") == _json(expected(events[: opening.sequence + 1]))
    _check_updates(rest, events, opening.sequence + 1)


def test_a_run_that_does_not_exist_yet_is_watched_from_its_first_event(live: Live) -> None:
    events = sample_run(events=25, seed=12)
    thread, got = _collect(live, events[0].run_id)
    threading.Event().wait(0.2)  # the watcher is registered before the run exists
    assert tailer_of(live.query.reader).watchers >= 1
    live.emit(events)
    thread.join(WAIT)
    assert not thread.is_alive()
    _check_updates(got, events, 0)


def test_from_sequence_replays_the_stored_events_then_continues_live(live: Live) -> None:
    events = sample_run(events=30, seed=13)
    live.emit_and_wait(events[:20])
    thread, got = _collect(live, events[0].run_id, from_sequence=5)
    live.emit(events[20:])
    thread.join(WAIT)
    assert not thread.is_alive()
    _check_updates(got, events, 5)


async def test_the_async_iterator_gets_the_same_updates(live: Live) -> None:
    events = sample_run(events=30, seed=14)
    live.emit_and_wait(events[:10])
    got: list[RunUpdate] = []

    async def watch() -> None:
        async for update in live.query.watch(events[0].run_id, from_sequence=0):
            got.append(update)

    task = asyncio.create_task(watch())
    await asyncio.to_thread(live.emit, events[10:])
    await asyncio.wait_for(task, WAIT)
    _check_updates(got, events, 0)


# --- over HTTP ---------------------------------------------------------------------------------


def _read(response: httpx.Response, until: int | None = None) -> list[Message]:
    """Messages of a stream until the terminal state (or the state of sequence `until`)."""
    messages = []
    for message in parse(response.iter_lines()):
        messages.append(message)
        if message.event == "state":
            state = orjson.loads(message.data)
            if until is not None and state["sequence"] >= until:
                break
            if state["status"] in ("completed", "failed", "cancelled"):
                break
    return messages


def _no_watchers_left(live: Live) -> None:
    deadline = time.monotonic() + 10
    while tailer_of(live.query.reader).watchers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tailer_of(live.query.reader).watchers == 0


def _wait_for_watchers(live: Live, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while tailer_of(live.query.reader).watchers < count:
        assert time.monotonic() < deadline, "the watchers did not register"
        time.sleep(0.01)


def _ended(state: str) -> bool:
    return orjson.loads(state)["status"] in ("completed", "failed", "cancelled")


def _pairs(messages: Sequence[Message]) -> list[int]:
    """The sequences of the events among `messages`, checking each has its state after it."""
    sequences = []
    for before, after in itertools.pairwise(messages):
        if before.event == "event":
            assert after.event == "state" and after.id == before.id
            event = orjson.loads(before.data)
            assert int(before.id or -1) == event["sequence"] == orjson.loads(after.data)["sequence"]
            sequences.append(event["sequence"])
    return sequences


def test_sse_disconnect_and_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    live: Live,
) -> None:
    events = sample_run(events=40, seed=21)
    run = events[0].run_id
    live.emit_and_wait(events[:10])
    with httpx.Client(base_url=live.url, timeout=WAIT) as client:
        with client.stream("GET", f"/runs/{run}/watch") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = _read(response, until=9)
        assert first[0].event == "state" and first[0].id == "9"
        live.emit_and_wait(events[10:25])
        with client.stream(
            "GET", f"/runs/{run}/watch", headers={"Last-Event-ID": "17"}
        ) as response:
            second = _read(response, until=24)
        live.emit(events[25:])
        with client.stream(
            "GET", f"/runs/{run}/watch", headers={"Last-Event-ID": "24"}
        ) as response:
            third = _read(response)
        assert _pairs(second) == list(range(18, 25))
        assert _pairs(third) == list(range(25, len(events)))
        assert orjson.loads(third[-1].data) == expected(events)
        # resuming after the end: nothing more, and a browser stops reconnecting
        done = client.get(f"/runs/{run}/watch", headers={"Last-Event-ID": str(len(events) - 1)})
        assert done.status_code == 204
        _no_watchers_left(live)  # every stream closed has let go of its registration
        bad = client.get(f"/runs/{run}/watch", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]
        for url, params in [
            ("/runs/not-a-uuid/watch", {}),
            (f"/runs/{run}/watch", {"from_sequence": "-1"}),
            ("/runs/watch", {"status": "sleeping"}),
            ("/runs/watch", {"session_id": "x"}),
            ("/runs/watch", {"active": "maybe"}),
        ]:
            answer = client.get(url, params=params)
            assert answer.status_code == 400, (url, params)
            assert answer.json()["error"]


def test_the_runs_feed_reports_state_changes(live: Live) -> None:
    events = sample_run(events=12, seed=31)
    with (
        httpx.Client(base_url=live.url, timeout=10) as client,  # fails, not hangs
        client.stream("GET", "/runs/watch", params={"active": "false"}) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")  # registered: nothing folded from now is missed
        live.emit(events)
        for message in parse(lines):
            state = orjson.loads(message.data)
            assert state["status"] in ("completed", "failed", "cancelled")
            if state["run_id"] == str(events[0].run_id):
                assert state == expected(events)
                break


async def test_500_concurrent_watchers_on_one_server_all_get_every_event(live: Live) -> None:
    events = sample_run(events=30, seed=41)
    run = events[0].run_id
    watchers = 500
    connected = asyncio.Semaphore(0)

    async def watch(client: httpx.AsyncClient) -> list[int]:
        sequences: list[int] = []
        async with client.stream("GET", f"/runs/{run}/watch", params={"from_sequence": 0}) as r:
            connected.release()
            lines = r.aiter_lines()
            event = ""
            async for line in lines:
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "event":
                    sequences.append(orjson.loads(line[6:])["sequence"])
                elif line.startswith("data: ") and event == "state" and _ended(line[6:]):
                    break
        return sequences

    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=live.url, timeout=WAIT, limits=limits) as client:
        tasks = [asyncio.create_task(watch(client)) for _ in range(watchers)]
        for _ in range(watchers):
            await asyncio.wait_for(connected.acquire(), WAIT)
        await asyncio.to_thread(live.emit, events)
        results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    assert all(r == list(range(len(events))) for r in results)
    _no_watchers_left(live)


def test_the_http_client_watches_like_the_query(live: Live) -> None:
    events = sample_run(events=30, seed=51)
    run = events[0].run_id
    live.emit_and_wait(events[:12])
    with RunStateClient(live.url) as client:
        got: list[RunUpdate] = []
        done = threading.Event()

        def work() -> None:
            got.extend(client.watch(run, from_sequence=3))
            done.set()

        threading.Thread(target=work, daemon=True).start()
        live.emit(events[12:])
        assert done.wait(WAIT)
        _check_updates(got, events, 3)
        opening = next(iter(client.watch(run)))
        assert opening.event is None and opening.state.model_dump(mode="json") == _json(
            expected(events)
        )
        with pytest.raises(InvalidQueryError, match="from_sequence"):
            client.watch(run, from_sequence=-1)


async def test_the_http_client_watches_asynchronously(live: Live) -> None:
    events = sample_run(events=20, seed=52)
    live.emit_and_wait(events)
    with RunStateClient(live.url) as client:
        got = [update async for update in client.watch(events[0].run_id, from_sequence=0)]
    _check_updates(got, events, 0)


async def test_an_idle_watch_yields_keepalives(live: Live) -> None:
    watch = live.query.watch(uuid.uuid4())
    batches = watch.abatches(keepalive=0.05)
    started = time.monotonic()
    assert await asyncio.wait_for(anext(batches), WAIT) == []
    assert time.monotonic() - started >= 0.04
    await batches.aclose()
    assert tailer_of(live.query.reader).watchers == 0


def test_a_watched_run_that_is_deleted_ends_the_stream(live: Live) -> None:
    events = sample_run(events=30, seed=71)
    run = events[0].run_id
    live.emit_and_wait(events[:10])
    thread, got = _collect(live, run)
    threading.Event().wait(0.2)
    live.producer.emit_tombstone(run).result(timeout=WAIT)
    thread.join(WAIT)
    assert not thread.is_alive(), "the watch did not end when its run was deleted"
    assert [u.sequence for u in got] == [9]
    with (
        httpx.Client(base_url=live.url, timeout=10) as client,
        client.stream("GET", f"/runs/{run}/watch", params={"from_sequence": 0}) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        live.emit(events[:3])  # the run starts again ...
        stream = parse(lines)
        messages = []
        for message in stream:
            messages.append(message)
            if message.event == "state" and message.id == "2":
                break
        live.producer.emit_tombstone(run).result(timeout=WAIT)  # ... and is deleted again
        messages += list(stream)
    assert _pairs(messages) == [0, 1, 2]
    assert messages[-1].event == "deleted"


def test_a_late_event_reaches_the_watchers_already_past_it_once_with_the_corrected_state(
    live: Live,
) -> None:
    events = sample_run(events=20, seed=81)
    run, late = events[0].run_id, events[5]
    live.emit_and_wait(events[:5] + events[6:12])  # 5 is late: 6..11 are folded first
    thread, updates = _collect(live, run, from_sequence=0)  # in-process, past 5 already
    resumed, after = _collect(live, run, from_sequence=9)  # 5 was not stored when it came
    remote: list[RunUpdate] = []
    with (
        RunStateClient(live.url) as watcher,
        httpx.Client(base_url=live.url, timeout=WAIT) as client,
        client.stream("GET", f"/runs/{run}/watch") as response,
    ):
        lines = parse(response.iter_lines())
        opening = next(lines)
        assert (opening.event, opening.id) == ("state", "11")
        assert orjson.loads(opening.data) == expected(events[:5] + events[6:12])
        over_http = threading.Thread(
            target=lambda: remote.extend(watcher.watch(run, from_sequence=0)), daemon=True
        )
        over_http.start()
        _wait_for_watchers(live, 4)
        live.emit_and_wait([late])
        live.emit(events[12:])
        messages = [next(lines), next(lines)]
        while messages[-1].event != "state" or not _ended(messages[-1].data):
            messages.append(next(lines))
        over_http.join(WAIT)
    # the late event as it is folded, then the state at the stream's position re-folded
    event, state = messages[:2]
    assert (event.event, event.id, orjson.loads(event.data)["sequence"]) == ("event", "5", 5)
    assert (state.event, state.id) == ("state", "11")
    assert orjson.loads(state.data) == expected(events[:12])
    assert _pairs(messages[2:]) == list(range(12, len(events)))  # then on, in order
    assert orjson.loads(messages[-1].data) == expected(events)
    thread.join(WAIT)
    resumed.join(WAIT)
    assert [u.sequence for u in after] == [9, 10, 11, 5, *range(12, len(events))]
    assert after[3].state.model_dump(mode="json") == _json(expected(events[:12]))
    for got in (updates, remote):
        assert [u.sequence for u in got] == [*range(5), *range(6, 12), 5, *range(12, len(events))]
        assert got[11].event == late
        assert got[11].state.model_dump(mode="json") == _json(expected(events[:12]))
    # a watcher replaying from the store afterwards gets every event in order, once
    assert [u.sequence for u in live.query.watch(run, from_sequence=0)] == list(range(len(events)))
    _no_watchers_left(live)


def test_the_runs_feed_follows_every_run_and_reports_deletions(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("behest.read.feed.RECENT", 0)  # "the newest runs" play no part
    old, other = sample_run(events=12, seed=91), sample_run(events=8, seed=92)
    live.emit_and_wait(old[:6] + old[7:])  # ended; its event 6 comes late
    with (
        httpx.Client(base_url=live.url, timeout=WAIT) as client,
        client.stream("GET", "/runs/watch") as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")  # registered: nothing folded from now is missed
        live.emit_and_wait(old[6:7])
        live.emit_and_wait(other)
        seen: list[tuple[str, dict[str, Any]]] = []
        messages = parse(lines)
        while ("state", expected(other)) not in seen:
            message = next(messages)
            seen.append((message.event, orjson.loads(message.data)))
        # an ended run's late event is a change too (a list view shows its new state)
        assert ("state", expected(old)) in seen
        live.producer.emit_tombstone(old[0].run_id).result(timeout=WAIT)
        message = next(messages)
        seen.append((message.event, orjson.loads(message.data)))
    old_id, other_id = str(old[0].run_id), str(other[0].run_id)
    assert seen[-1] == ("deleted", {"run_id": old_id, "deleted": True})
    assert {s["run_id"] for _, s in seen} == {old_id, other_id}
    _no_watchers_left(live)


def test_the_runs_feed_reads_on_within_its_bound(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("behest.read.feed.MAX_WAITING", 2)  # runs read ahead of the store
    runs = [sample_run(events=4, seed=100 + n) for n in range(6)]
    feed = live.query.watch_runs()
    states = iter(feed)
    reported: set[uuid.UUID] = set()
    done = threading.Event()

    def work() -> None:
        for state in states:
            assert isinstance(state, RunState)
            reported.add(state.run_id)
            if reported >= {run[0].run_id for run in runs}:
                done.set()
                return

    threading.Thread(target=work, daemon=True).start()
    _wait_for_watchers(live, 1)
    live.emit_and_wait([event for run in runs for event in run])
    assert done.wait(WAIT), f"reported {len(reported)} of {len(runs)} runs"
