"""RunStateQuery against a real RocksDB filled by the projector's own batch fold."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from behest.codec import decode_record, encode
from behest.errors import InvalidQueryError, WaitTimeoutError
from behest.events import (
    AgentEvent,
    ModelStarted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunState,
    RunStatus,
    TextDelta,
    TokenUsage,
    UsageRecorded,
)
from behest.fold.projection import fold
from behest.fold.storeset import StoreSet
from behest.projections.run_state import RunStateProjection
from behest.read.query import MAX_BATCH, MAX_LIMIT, RunStateQuery, _over, parse_time, run_key
from behest.testing import ProjectionDriver
from tests.unit.strategies import run_histories

TOPIC = "behest.test-events"
T0 = datetime(2026, 11, 20, 14, 0, 0, tzinfo=UTC)
PROJECTION = RunStateProjection()


def run_events(
    *,
    session: uuid.UUID | None = None,
    start: datetime = T0,
    steps: int = 3,
    end: str | None = None,
    run_id: uuid.UUID | None = None,
) -> list[AgentEvent]:
    """A run: RunStarted, `steps` model calls with usage, then an optional terminal event."""
    run = run_id or uuid.uuid4()
    payloads: list[Any] = [
        RunStarted(session_id=session or uuid.uuid4(), provider="openai", model="gpt-4o")
    ]
    for i in range(1, steps + 1):
        payloads.append(ModelStarted(provider="openai", model="gpt-4o", iteration=i))
        payloads.append(UsageRecorded(usage=TokenUsage.new(10 * i, i)))
    if end == "completed":
        payloads.append(RunCompleted(finish_reason="stop", iterations=steps))
    elif end == "failed":
        payloads.append(RunFailed(error="provider timeout"))
    elif end == "cancelled":
        payloads.append(RunCancelled())
    return [
        AgentEvent(
            run_id=run, sequence=n, timestamp=start + timedelta(milliseconds=n), payload=payload
        )
        for n, payload in enumerate(payloads)
    ]


def reference(events: Sequence[AgentEvent]) -> dict[str, Any] | None:
    """The state folded straight from the events, no store involved."""
    state = fold(PROJECTION, [decode_record(encode(e)) for e in events])
    return None if state is None else orjson.loads(PROJECTION.encode_state(state))


def as_dict(state: RunState | None) -> dict[str, Any] | None:
    return None if state is None else state.to_json_dict()


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[ProjectionDriver[Any]]:
    """The run-state store, filled through the Projector's own batch fold."""
    with ProjectionDriver(PROJECTION, tmp_path, topic=TOPIC, snapshot_every=4) as driver:
        yield driver


@pytest.fixture
def query(driver: ProjectionDriver[Any]) -> RunStateQuery:
    return RunStateQuery(driver.store, topic=TOPIC)


# --- point in time: a property against the plain fold ---------------------------------------


@st.composite
def runs(draw: st.DrawFn) -> list[AgentEvent]:
    """A run with non-decreasing, often equal timestamps, maybe gaps in its sequences and
    maybe no RunStarted: the edges that `run_histories` rarely reaches."""
    length = draw(st.integers(1, 40))
    run = uuid.uuid4()
    sequence = draw(st.integers(0, 2))
    moment = T0
    events = []
    for n in range(length):
        payload: Any
        if n == 0 and draw(st.booleans()):
            payload = RunStarted(session_id=uuid.uuid4(), provider="p", model="m")
        else:
            payload = draw(
                st.sampled_from(
                    [
                        ModelStarted(provider="p", model="m", iteration=n),
                        UsageRecorded(usage=TokenUsage.new(n, 2 * n)),
                        TextDelta(delta="x"),
                        RunFailed(error=f"e{n}"),
                        RunCompleted(finish_reason="stop", iterations=n),
                    ]
                )
            )
        events.append(AgentEvent(run_id=run, sequence=sequence, timestamp=moment, payload=payload))
        sequence += draw(st.sampled_from([1, 1, 1, 2]))
        moment += timedelta(microseconds=draw(st.sampled_from([0, 1, 5, 1000])))
    return events


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Any]]:
    """One store per snapshot interval, shared by every example."""
    opened: dict[int, ProjectionDriver[Any]] = {}
    root = tmp_path_factory.mktemp("prop")
    for every in range(1, 9):
        opened[every] = ProjectionDriver(PROJECTION, root / str(every), snapshot_every=every)
    yield opened
    for driver in opened.values():
        driver.close()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=runs() | run_histories(max_events=30).filter(lambda h: h[0].timestamp >= _EPOCH),
    every=st.integers(1, 8),
    data=st.data(),
)
def test_get_at_equals_the_fold_up_to_the_point(
    drivers: dict[int, ProjectionDriver[Any]],
    events: list[AgentEvent],
    every: int,
    data: st.DataObject,
) -> None:
    driver = drivers[every]
    fresh = uuid.uuid4()  # the stores are shared by every example: one new run each
    events = [e.model_copy(update={"run_id": fresh}) for e in events]
    driver.feed(events)
    query = RunStateQuery(driver.store)
    run_id = events[0].run_id
    last = events[-1].sequence
    stamps = [e.timestamp for e in events]
    for _ in range(6):
        n = data.draw(st.integers(0, last + 3), label="at_sequence")
        expected = reference([e for e in events if e.sequence <= n])
        assert as_dict(query.get_at(run_id, at_sequence=n)) == expected
        as_json = query.raw.get_at(run_id, at_sequence=n)
        assert (None if as_json is None else orjson.loads(as_json)) == expected

        moment = data.draw(
            st.one_of(
                st.sampled_from(stamps),
                st.integers(-3, 3).map(lambda d: stamps[0] + timedelta(microseconds=d)),
                st.integers(-3, 3).map(lambda d: stamps[-1] + timedelta(microseconds=d)),
                st.integers(0, 3000).map(lambda d: stamps[0] + timedelta(microseconds=d)),
            ),
            label="as_of",
        )
        expected = reference([e for e in events if e.timestamp <= moment])
        assert as_dict(query.get_at(run_id, as_of=moment)) == expected
    assert as_dict(query.get(run_id)) == reference(events)


def test_get_at_accepts_any_time_zone_and_defaults_to_current(
    driver: ProjectionDriver[Any], query: RunStateQuery
) -> None:
    events = run_events(steps=20, end="completed")
    driver.feed(events)
    run_id = events[0].run_id
    paris = events[10].timestamp.astimezone(timezone(timedelta(hours=1)))
    assert as_dict(query.get_at(run_id, as_of=paris)) == reference(events[:11])
    assert query.get_at(run_id) == query.get(run_id)
    assert query.get_at(run_id, as_of=T0 - timedelta(days=365 * 100)) is None
    assert query.get_at(uuid.uuid4(), at_sequence=3) is None


# --- current and batch ------------------------------------------------------------------------


def test_get_serves_the_stored_bytes(driver: ProjectionDriver[Any], query: RunStateQuery) -> None:
    events = run_events(end="failed")
    driver.feed(events)
    run_id = events[0].run_id
    state = query.get(run_id)
    assert state is not None
    assert state.status is RunStatus.FAILED
    assert state.last_error == "provider timeout"
    assert state.total_usage.total_tokens == 66
    assert query.raw.get(str(run_id)) == driver.store.get_state(run_id.bytes)
    assert query.get(uuid.uuid4()) is None
    assert query.raw.get(str(uuid.uuid4())) is None


def test_get_many_keeps_the_order_asked_and_marks_unknown_runs(
    driver: ProjectionDriver[Any], query: RunStateQuery
) -> None:
    first, second = run_events(), run_events(end="completed")
    driver.feed(first + second)
    unknown = uuid.uuid4()
    a, b = first[0].run_id, second[0].run_id
    found = query.get_many([str(b), unknown, a, str(b)])
    assert list(found) == [b, unknown, a]
    assert found[unknown] is None
    assert as_dict(found[a]) == reference(first)
    assert as_dict(found[b]) == reference(second)

    then = query.get_many([a, b], as_of=first[1].timestamp)
    assert as_dict(then[a]) == reference(first[:2])
    assert then[b] is None or as_dict(then[b]) == reference(
        [e for e in second if e.timestamp <= first[1].timestamp]
    )
    assert query.get_many([]) == {}


def test_get_many_builds_each_model_when_first_read_and_once(
    driver: ProjectionDriver[Any], query: RunStateQuery
) -> None:
    runs = [run_events(), run_events(end="failed"), run_events(steps=1)]
    driver.feed([e for run in runs for e in run])
    ids = [run[0].run_id for run in runs]
    unknown = uuid.uuid4()
    built: list[bytes] = []

    def finish(data: bytes) -> RunState:
        built.append(data)
        return RunState.model_validate_json(data)

    found = _over(query.reader, finish).get_many([*ids, unknown, ids[0]])
    assert built == []  # one multi-get, no model yet
    assert list(found) == [*ids, unknown] and len(found) == 4
    assert ids[1] in found and unknown in found and str(ids[1]) not in found
    assert as_dict(found[ids[1]]) == reference(runs[1])
    assert found[ids[1]] is found[ids[1]] and len(built) == 1  # built once
    assert found[unknown] is None and len(built) == 1
    with pytest.raises(KeyError):
        found[uuid.uuid4()]
    with pytest.raises(KeyError):
        found[str(ids[0])]  # type: ignore[index]  # keys are run ids, as in a dict
    values = list(found.values())
    assert [as_dict(v) if v else None for v in values] == [
        *(reference(run) for run in runs),
        None,
    ]
    assert len(built) == 3 and values[1] is found[ids[1]]  # the rest built in one go
    assert dict(found.items()) == {r: v for r, v in zip([*ids, unknown], values, strict=True)}
    assert found == query.get_many([*ids, unknown]) and found != {}
    assert repr(found).startswith("States({UUID(")
    raw = query.raw.get_many(ids)
    assert list(raw.values()) == [query.raw.get(r) for r in ids]


def test_batch_reads_build_the_models_single_reads_build(
    driver: ProjectionDriver[Any], query: RunStateQuery
) -> None:
    runs = [run_events(), run_events(end="failed"), run_events(steps=1, end="completed")]
    driver.feed([e for run in runs for e in run])
    ids = [run[0].run_id for run in runs]
    one_by_one = [query.get(r) for r in ids]
    assert list(query.get_many(ids).values()) == one_by_one  # built in bulk (run_models)
    assert dict(query.get_many(ids).pairs()) == dict(zip(ids, one_by_one, strict=True))
    listed, _ = query.list_runs(limit=10)
    assert sorted(listed, key=lambda s: str(s.run_id)) == sorted(
        one_by_one, key=lambda s: str(s and s.run_id)
    )


@given(st.uuids(), st.booleans())
def test_run_key_reads_every_spelling_of_a_run_id_as_uuid_does(
    run_id: uuid.UUID, upper: bool
) -> None:
    text = str(run_id).upper() if upper else str(run_id)
    assert run_key(text) == run_id.bytes == run_key(run_id)
    assert run_key(run_id.hex) == run_id.bytes  # no hyphens: the slow path, same answer


@given(st.text(alphabet="0123456789abcdefABCDEF- _{}x\t", min_size=30, max_size=40))
@example("{12345678-1234-1234-1234-123456789abc}")
@example("12345678-1234-1234-1234-1234567_9abc")  # int(..., 16) takes the underscore
@example("1234 678-1234-1234-1234-123456789abc")
@example("12345678-1234-1234-1234-123456789ab ")
@example("12345678-1234-1234-1234-123456789abx")
@example("1234567812341234-1234-1234-56789abc--")
def test_run_key_accepts_exactly_what_uuid_accepts(text: str) -> None:
    try:
        expected: bytes | None = uuid.UUID(text).bytes
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(InvalidQueryError, match="not a run id"):
            run_key(text)
    else:
        assert run_key(text) == expected


def test_get_many_refuses_more_than_the_batch_limit(query: RunStateQuery) -> None:
    with pytest.raises(InvalidQueryError, match=f"at most {MAX_BATCH}"):
        query.get_many([uuid.uuid4() for _ in range(MAX_BATCH + 1)])
    with pytest.raises(InvalidQueryError, match="not one string"):
        query.get_many(str(uuid.uuid4()))
    with pytest.raises(InvalidQueryError, match="not a run id"):
        query.get_many([uuid.uuid4(), "nope"])


# --- listing ----------------------------------------------------------------------------------


@pytest.fixture
def fleet(driver: ProjectionDriver[Any]) -> dict[str, Any]:
    """Nine runs one second apart over two sessions, in every kind of end state."""
    sessions = [uuid.uuid4(), uuid.uuid4()]
    ends = [None, "completed", "failed", "cancelled", None, "completed", None, "failed", None]
    all_events: list[list[AgentEvent]] = [
        run_events(session=sessions[i % 2], start=T0 + timedelta(seconds=i), end=end)
        for i, end in enumerate(ends)
    ]
    driver.feed([e for events in all_events for e in events])
    states = [reference(events) for events in all_events]
    return {"sessions": sessions, "states": states}


def _ids(states: Sequence[RunState]) -> list[str]:
    return [str(s.run_id) for s in states]


def _newest_first(states: Sequence[dict[str, Any] | None]) -> list[str]:
    return [s["run_id"] for s in reversed(states) if s is not None]


def test_list_runs_pages_newest_first_through_every_run(
    query: RunStateQuery, fleet: dict[str, Any]
) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = query.list_runs(limit=4, cursor=cursor)
        seen += _ids(page)
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert seen == _newest_first(fleet["states"])
    everything, cursor = query.list_runs(limit=9)
    assert cursor is None
    assert _ids(everything) == seen


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"status": "completed"}, lambda s, _: s["status"] == "completed"),
        ({"status": RunStatus.CALLING_MODEL}, lambda s, _: s["status"] == "calling_model"),
        ({"active": True}, lambda s, _: s["status"] == "calling_model"),
        ({"active": False}, lambda s, _: s["status"] in {"completed", "failed", "cancelled"}),
        ({"session": 0}, lambda s, ses: s["session_id"] == str(ses[0])),
        (
            {"session": 1, "status": "failed"},
            lambda s, ses: s["session_id"] == str(ses[1]) and s["status"] == "failed",
        ),
        (
            {"session": 0, "active": False},
            lambda s, ses: s["session_id"] == str(ses[0]) and s["status"] != "calling_model",
        ),
        ({"status": "completed", "active": True}, lambda s, _: False),
        ({"status": "pending"}, lambda s, _: False),
    ],
)
def test_list_runs_filters(
    query: RunStateQuery, fleet: dict[str, Any], filters: dict[str, Any], keep: Any
) -> None:
    sessions = fleet["sessions"]
    if "session" in filters:
        filters["session_id"] = sessions[filters.pop("session")]
    expected = _newest_first([s for s in fleet["states"] if keep(s, sessions)])
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = query.list_runs(limit=2, cursor=cursor, **filters)
        seen += _ids(page)
        if cursor is None:
            break
    assert seen == expected


def test_list_runs_refuses_bad_input(query: RunStateQuery) -> None:
    with pytest.raises(InvalidQueryError, match="unknown status 'done'"):
        query.list_runs(status="done")
    for limit in (0, MAX_LIMIT + 1, -5):
        with pytest.raises(InvalidQueryError, match="limit must be"):
            query.list_runs(limit=limit)
    for cursor in ("garbage!", "", "AQ", "AA" * 20):
        with pytest.raises(InvalidQueryError, match="not one this API issued"):
            query.list_runs(cursor=cursor)
    with pytest.raises(InvalidQueryError, match="session_id 'x' is not a UUID"):
        query.list_runs(session_id="x")


def test_list_events_in_sequence_order(driver: ProjectionDriver[Any], query: RunStateQuery) -> None:
    events = run_events(steps=5, end="completed")
    driver.feed(events)
    run_id = events[0].run_id
    assert query.list_events(run_id) == events
    assert query.list_events(run_id, from_sequence=3, limit=4) == events[3:7]
    assert query.list_events(run_id, from_sequence=100) == []
    assert query.list_events(uuid.uuid4()) == []


# --- input checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"at_sequence": -1}, "at_sequence must be between 0"),
        ({"at_sequence": 2**63}, "at_sequence must be between 0"),
        ({"at_sequence": "3"}, "at_sequence must be an integer"),
        ({"as_of": datetime(2026, 1, 1)}, "has no time zone"),  # noqa: DTZ001
        ({"as_of": "2026-01-01T00:00:00Z"}, "as_of must be a datetime"),
        ({"as_of": T0, "at_sequence": 1}, "not both"),
    ],
)
def test_get_at_refuses_bad_points(
    query: RunStateQuery, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        query.get_at(uuid.uuid4(), **kwargs)


@pytest.mark.parametrize("bad", ["", "123", "3f2c9a1e-8b4d-4c6f-9e2a", "zz" * 16])
def test_every_read_refuses_a_malformed_run_id(query: RunStateQuery, bad: str) -> None:
    for call in (
        lambda: query.get(bad),
        lambda: query.raw.get(bad),
        lambda: query.get_at(bad, at_sequence=0),
        lambda: query.list_events(bad),
    ):
        with pytest.raises(InvalidQueryError, match="not a run id"):
            call()


def test_list_events_refuses_bad_bounds(query: RunStateQuery) -> None:
    with pytest.raises(InvalidQueryError, match="from_sequence"):
        query.list_events(uuid.uuid4(), from_sequence=-1)
    with pytest.raises(InvalidQueryError, match="limit"):
        query.list_events(uuid.uuid4(), limit=MAX_LIMIT + 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T14:03:07Z", datetime(2026, 11, 20, 14, 3, 7, tzinfo=UTC)),
        ("2026-11-20T15:03:07.5+01:00", datetime(2026, 11, 20, 14, 3, 7, 500000, tzinfo=UTC)),
        ("2026-11-20T15:03:07 01:00", datetime(2026, 11, 20, 14, 3, 7, tzinfo=UTC)),
        ("2026-11-20 14:03:07.000001Z", datetime(2026, 11, 20, 14, 3, 7, 1, tzinfo=UTC)),
    ],
)
def test_parse_time_reads_rfc3339(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2026-11-20T14:03:07", "2026-11-20", "17e8"])
def test_parse_time_refuses_anything_else(text: str) -> None:
    with pytest.raises(InvalidQueryError):
        parse_time(text)


# --- following the projector: secondary, freshness, read-your-writes --------------------------


def _secondary(driver: ProjectionDriver[Any], **kwargs: Any) -> RunStateQuery:
    reader = StoreSet.open(driver.layout.root.parent, driver.projection.name)
    return RunStateQuery(reader, topic=TOPIC, owns_store=True, **kwargs)


def test_a_secondary_follows_the_writer_within_max_staleness(
    driver: ProjectionDriver[Any],
) -> None:
    first = run_events()
    driver.feed(first)
    with _secondary(driver, max_staleness=3600) as query:
        query.refresh(force=True)
        assert query.get(first[0].run_id) is not None
        assert query.freshness().offsets == {0: len(first)}
        second = run_events()
        driver.feed(second)
        assert query.get(second[0].run_id) is None  # within max_staleness: not synced yet
        before = query.freshness().synced_at
        last_offset = len(first) + len(second) - 1
        query.wait_for((0, last_offset), timeout=5)
        assert query.get(second[0].run_id) is not None
        fresh = query.freshness()
        assert fresh.offsets == {0: last_offset + 1}
        assert fresh.synced_at > before
        assert fresh.to_json_dict()["offsets"] == {"0": last_offset + 1}


def test_a_secondary_syncs_by_itself_once_max_staleness_passed(
    driver: ProjectionDriver[Any],
) -> None:
    with _secondary(driver, max_staleness=0.05) as query:
        events = run_events()
        driver.feed(events)
        time.sleep(0.06)
        assert query.get(events[0].run_id) is not None


def test_keep_fresh_catches_up_on_its_own_thread_until_closed(
    driver: ProjectionDriver[Any],
) -> None:
    query = _secondary(driver, max_staleness=0.05)
    with query:
        query.reader.keep_fresh()
        query.reader.keep_fresh()  # once is enough: no second thread
        threads = [t for t in threading.enumerate() if t.name.startswith("behest-fresh-")]
        assert len(threads) == 1
        events = run_events()
        driver.feed(events)
        key = events[0].run_id.bytes
        deadline = time.monotonic() + 5
        while query.store.get_state(key) is None:  # the store itself: no read catches up
            assert time.monotonic() < deadline, "keep_fresh never caught up"
            time.sleep(0.01)
    assert not threads[0].is_alive()


def test_wait_for_times_out_then_sees_a_later_write(driver: ProjectionDriver[Any]) -> None:
    first = run_events()
    driver.feed(first)
    with _secondary(driver) as query:
        target = len(first) + 2
        with pytest.raises(WaitTimeoutError, match=f"not yet past {target}"):
            query.wait_for((0, target), timeout=0.05)

        late = run_events()
        timer = threading.Timer(0.2, driver.feed, args=(late,))
        timer.start()
        started = time.monotonic()
        query.wait_for(Delivered(TOPIC, 0, target), timeout=10)
        timer.join()
        assert time.monotonic() - started >= 0.15
        assert query.get(late[0].run_id) is not None


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


def test_wait_for_refuses_another_topic_and_bad_positions(query: RunStateQuery) -> None:
    with pytest.raises(InvalidQueryError, match="topic 'other'"):
        query.wait_for(Delivered("other", 0, 1))
    with pytest.raises(InvalidQueryError, match="no such position"):
        query.wait_for((0, -1))
