"""Never lose an event, never stall, never serve a broken read: on the real broker.

Late events are folded in place, conflicting duplicates and records no reader could read
are dead-lettered, records of any size are dead-lettered (a prefix of the big ones) with
the records after them folded, and a dead-letter topic that cannot take them stops the
projector before it writes anything.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, Producer

from behest.codec import decode_record, encode, encode_record
from behest.config import Settings
from behest.errors import ProduceError
from behest.events import (
    AgentEvent,
    TextDelta,
    ToolExecutionFinished,
    ToolExecutionSuccess,
    format_time,
)
from behest.fold.deadletter import (
    HEADER_ORIGINAL_KEY_SIZE,
    HEADER_ORIGINAL_SIZE,
    HEADER_TRUNCATED,
    PREFIXES,
)
from behest.fold.engine import HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION
from behest.fold.projection import fold
from behest.fold.sequences import RunHead
from behest.projections import RunStateProjection
from behest.projections.run_state import to_json_dict
from behest.read.query import RunStateQuery
from behest.read.server import BackgroundServer
from behest.testing import sample_run
from tests.integration.test_projector import Record, as_records, make, produce, stored

RUN_STATE = RunStateProjection()


def dead_letters(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first `count` records of a dead-letter topic."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    letters: list[Any] = []
    try:
        for _ in range(120):
            letters += [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
            if len(letters) >= count:
                break
    finally:
        consumer.close()
    return letters


def in_order(events: list[AgentEvent]) -> Any:
    return fold(RUN_STATE, [decode_record(encode(e)) for e in sorted(events, key=_seq)])


def _seq(event: AgentEvent) -> int:
    return event.sequence


@pytest.fixture
def api(settings: Settings) -> Callable[[], Any]:
    """Opens the HTTP API over the settings' store once the projector has written it."""
    opened: list[Any] = []

    def start() -> httpx.Client:
        query = RunStateQuery.open(settings)
        server = BackgroundServer(query)
        server.__enter__()
        client = httpx.Client(base_url=server.url, timeout=10)
        opened.extend([client, server, query])
        return client

    yield start
    if opened:
        client, server, query = opened
        client.close()
        server.__exit__(None, None, None)
        query.close()


def test_late_events_are_folded_in_place(
    settings: Settings, bootstrap_servers: str, api: Callable[[], httpx.Client]
) -> None:
    run = sample_run(seed=31, events=40)
    # RunStarted last, 10..14 after the rest, and one duplicate; across two projector runs.
    first = [*run[1:10], *run[15:]]
    second = [*run[10:15], run[0]]
    produce(bootstrap_servers, settings.topic, as_records(first))
    with make(settings, snapshot_every=8) as projector:
        projector.run(until_caught_up=True)
        (early,) = stored(projector).values()  # no RunStarted yet: unknown, not made up
        assert (early["session_id"], early["provider"], early["model"]) == (None, None, None)
    produce(bootstrap_servers, settings.topic, as_records([*second, run[3]]))
    with make(settings, snapshot_every=8) as projector:
        metrics = projector.run(until_caught_up=True)
        assert (metrics.late_repaired, metrics.duplicates, metrics.dead_letters) == (6, 1, 0)
        key = run[0].run_id.bytes
        assert stored(projector) == {key: in_order(run)}
        assert projector.store.get_head(key) == RunHead(len(run) - 1)
    client = api()
    answer = client.get(f"/runs/{run[0].run_id}/events", params={"limit": 1000})
    assert answer.status_code == 200
    events = answer.json()["events"]
    assert [e["sequence"] for e in events] == list(range(len(run)))
    assert [e["event_id"] for e in events] == [str(e.event_id) for e in run]
    state = client.get(f"/runs/{run[0].run_id}").json()
    assert state == to_json_dict(in_order(run))
    # Points in time come from the corrected snapshots and time index.
    for sequence in (0, 7, 12, 20, 33):
        point = run[sequence]
        want = to_json_dict(in_order(run[: sequence + 1]))
        at = client.get(f"/runs/{run[0].run_id}", params={"at_sequence": sequence})
        assert at.json() == want
        as_of = client.get(f"/runs/{run[0].run_id}", params={"as_of": format_time(point.timestamp)})
        upto = [e for e in run if e.timestamp <= point.timestamp]
        assert as_of.json() == to_json_dict(in_order(upto))


def test_a_conflicting_duplicate_is_dead_lettered(
    settings: Settings, bootstrap_servers: str
) -> None:
    run = sample_run(seed=32, events=10)
    impostor = run[4].model_copy(update={"event_id": uuid.uuid4(), "payload": TextDelta(delta="x")})
    records = as_records([*run, run[4], impostor])
    delivered = produce(bootstrap_servers, settings.topic, records)
    with make(settings) as projector:
        metrics = projector.run(until_caught_up=True)
        assert (metrics.duplicates, metrics.dead_letters) == (1, 1)
        assert stored(projector) == {run[0].run_id.bytes: in_order(run)}
    (letter,) = dead_letters(bootstrap_servers, settings.dlq_topic, 1)
    headers = dict(letter.headers())
    assert letter.value() == encode(impostor)
    assert (int(headers[HEADER_PARTITION]), int(headers[HEADER_OFFSET])) == delivered[-1]
    assert headers[HEADER_ERROR].startswith(b"conflict: sequence 4")


@pytest.mark.parametrize("size", [1_040_000, 5_000_000])
def test_a_record_of_any_size_is_dead_lettered_and_the_rest_folded(
    size: int,
    bootstrap_servers: str,
    make_topic: Callable[..., str],
    tmp_path: Any,
) -> None:
    config = {"max.message.bytes": str(size + 100_000)} if size > 1_048_000 else {}
    topic = make_topic(config=config)
    make_topic(f"{topic}.dlq")
    settings = Settings(bootstrap_servers=bootstrap_servers, topic=topic, state_dir=tmp_path)
    run = sample_run(seed=33, events=12)
    key = str(run[0].run_id).encode()
    huge = b"\x00\x01" + bytes(range(256)) * (size // 256) + b"\x00" * (size % 256 - 2)
    assert len(huge) == size
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "partitioner": "murmur2_random",
            "message.max.bytes": size + 100_000,
        }
    )
    values = [encode(e) for e in run[:6]] + [huge] + [encode(e) for e in run[6:]]
    for value in values:
        producer.produce(topic, value, key)
    assert producer.flush(60) == 0
    with make(settings) as projector:
        metrics = projector.run(until_caught_up=True)
        assert (metrics.events_folded, metrics.dead_letters) == (len(run), 1)
        assert stored(projector) == {run[0].run_id.bytes: in_order(run)}
    (letter,) = dead_letters(bootstrap_servers, settings.dlq_topic, 1)
    headers = dict(letter.headers())
    assert letter.value() == huge[: PREFIXES[0]]
    assert letter.key() == key
    assert headers[HEADER_ORIGINAL_SIZE] == str(size).encode()
    assert headers[HEADER_ORIGINAL_KEY_SIZE] == str(len(key)).encode()
    assert headers[HEADER_TRUNCATED] == b"true"
    assert int(headers[HEADER_OFFSET]) == 6
    assert b"not an Avro single-object encoded event" in headers[HEADER_ERROR]


def test_a_dead_letter_topic_for_small_records_gets_a_smaller_prefix(
    bootstrap_servers: str, make_topic: Callable[..., str], tmp_path: Any
) -> None:
    topic = make_topic()
    make_topic(f"{topic}.dlq", config={"max.message.bytes": "20000"})
    settings = Settings(bootstrap_servers=bootstrap_servers, topic=topic, state_dir=tmp_path)
    run = sample_run(seed=36, events=5)
    junk = b"\x00\x01" + bytes(100_000)
    key = str(run[0].run_id).encode()
    produce(bootstrap_servers, topic, [*as_records(run[:2]), (key, junk), *as_records(run[2:])])
    with make(settings) as projector:
        metrics = projector.run(until_caught_up=True)
        assert (metrics.events_folded, metrics.dead_letters) == (len(run), 1)
    (letter,) = dead_letters(bootstrap_servers, settings.dlq_topic, 1)
    assert letter.value() == junk[: PREFIXES[1]]  # the whole, then 64 KiB, were refused
    assert dict(letter.headers())[HEADER_ORIGINAL_SIZE] == b"100002"


def test_a_dead_letter_topic_that_cannot_take_them_stops_the_projector_unwritten(
    bootstrap_servers: str, make_topic: Callable[..., str], tmp_path: Any
) -> None:
    topic = make_topic()  # and no dead-letter topic
    settings = Settings(bootstrap_servers=bootstrap_servers, topic=topic, state_dir=tmp_path)
    run = sample_run(seed=34, events=6)
    key = str(run[0].run_id).encode()
    # The poison first in its run's partition: no batch of that partition can be written.
    produce(bootstrap_servers, topic, [(key, b"\x00junk"), *as_records(run)])
    with make(settings, batch_size=1000) as projector:
        with pytest.raises(ProduceError, match=r"behest topics create"):
            projector.run(until_caught_up=True)
        assert projector.store.stored_offsets(topic) == {}
        assert stored(projector) == {}
    make_topic(f"{topic}.dlq")
    with make(settings) as projector:
        metrics = projector.run(until_caught_up=True)
        assert (metrics.events_folded, metrics.dead_letters) == (len(run), 1)


def _bad(event: AgentEvent, change: Callable[[dict[str, Any]], None]) -> bytes:
    record: Any = decode_record(encode(event))
    change(record)
    return encode_record(record)


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _poison_of(run: list[AgentEvent]) -> list[tuple[str, bytes]]:
    """Events the Avro schema admits but the model does not: each one a dead letter."""
    by_type = {e.type: e for e in run}

    def payload(**fields: Any) -> Callable[[dict[str, Any]], None]:
        def change(record: dict[str, Any]) -> None:
            body = record["payload"][1]
            for path, value in fields.items():
                *parents, leaf = path.split("__")
                node = body
                for parent in parents:
                    node = node[parent]
                    if isinstance(node, tuple):  # a union branch: (name, fields)
                        node = node[1]
                node[leaf] = value

        return change

    def envelope(**fields: Any) -> Callable[[dict[str, Any]], None]:
        return lambda record: record.update(fields)

    started, usage = by_type["RunStarted"], by_type["UsageRecorded"]
    call, done = by_type["ToolCallCompleted"], by_type["ToolExecutionFinished"]
    success = done.model_copy(
        update={
            "payload": ToolExecutionFinished(
                call_id="c", tool_name="t", result=ToolExecutionSuccess(output=1), duration_ms=1
            )
        }
    )
    return [
        ("RunStarted.metadata is not valid JSON", _bad(started, payload(metadata="{bad"))),
        ("RunStarted.metadata nests deeper", _bad(started, payload(metadata=_deep(300)))),
        ("ToolCall.arguments is not valid JSON", _bad(call, payload(call__arguments="[1,"))),
        ("ToolExecutionSuccess.output is not", _bad(success, payload(result__output="nope"))),
        ("RunStarted.session_id", _bad(started, payload(session_id="not-a-uuid"))),
        ("UsageRecorded.usage.input_tokens", _bad(usage, payload(usage__input_tokens=-1))),
        ("event_id 'x' is not a UUID", _bad(started, envelope(event_id="x"))),
        ("outside the years 1 to 9999", _bad(started, envelope(timestamp=2**62))),
    ]


def test_no_stored_byte_can_break_a_read(
    settings: Settings, bootstrap_servers: str, api: Callable[[], httpx.Client]
) -> None:
    runs = [sample_run(seed=35 + n, events=30) for n in range(3)]
    poison = _poison_of(runs[0])
    key = str(runs[0][0].run_id).encode()
    records: list[Record] = [r for run in runs for r in as_records(run)]
    records += [(key, value) for _, value in poison]
    produce(bootstrap_servers, settings.topic, records)
    with make(settings) as projector:
        metrics = projector.run(until_caught_up=True)
        assert metrics.dead_letters == len(poison)
        assert stored(projector) == {run[0].run_id.bytes: in_order(run) for run in runs}
    letters = dead_letters(bootstrap_servers, settings.dlq_topic, len(poison))
    errors = sorted(dict(letter.headers())[HEADER_ERROR].decode() for letter in letters)
    for why, _ in poison:
        assert sum(why in error for error in errors) == 1, (why, errors)
    client = api()
    for run in runs:
        answers = list(_every_read(client, run))
        assert all(a.status_code < 500 for a in answers), [
            (a.request.url, a.status_code) for a in answers if a.status_code >= 500
        ]


def _every_read(client: httpx.Client, run: list[AgentEvent]) -> Iterator[httpx.Response]:
    run_id = str(run[0].run_id)
    middle = run[len(run) // 2]
    yield client.get(f"/runs/{run_id}")
    yield client.get(f"/runs/{run_id}", params={"at_sequence": middle.sequence})
    as_of = format_time(middle.timestamp + timedelta(microseconds=1))
    yield client.get(f"/runs/{run_id}", params={"as_of": as_of})
    yield client.get(f"/runs/{run_id}/events", params={"limit": 1000})
    yield client.post("/runs/batch", content=orjson.dumps({"run_ids": [run_id]}))
    yield client.get("/runs", params={"limit": 100})
    yield client.get("/runs", params={"active": "true"})
    yield client.get("/runs", params={"session_id": str(run[0].payload.session_id)})  # type: ignore[union-attr]
    for status in ("pending", "completed", "failed", "cancelled", "session_loaded"):
        yield client.get("/runs", params={"status": status})


def test_behest_project_says_how_many_late_events_it_repaired(
    settings: Settings, bootstrap_servers: str
) -> None:
    run = sample_run(seed=37, events=8)
    produce(bootstrap_servers, settings.topic, as_records([*run[2:], run[1], run[0], run[0]]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "behest.cli",
            "project",
            "--until-caught-up",
            "--bootstrap-servers",
            bootstrap_servers,
            "--topic",
            settings.topic,
            "--state-dir",
            str(settings.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    said = " ".join((done.stdout + done.stderr).split())  # a console may write either
    assert "1 duplicates, 1 gaps, 2 late repaired" in said, said
