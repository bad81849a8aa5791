"""The Projector on a real broker: exactly-once folds, duplicates, gaps, poison, tombstones,
resume, rebuild and read-your-writes.

Events are produced with confluent-kafka directly (murmur2 partitioner, as behest's
producers), so these tests can also write what no behest producer would: junk, mismatched
keys, replays and gaps. The expectation is always `fold_by_key` over what was produced.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from behest.codec import decode_record, encode
from behest.config import Settings
from behest.errors import StateLockedError, StoreError, TopicMissingError
from behest.events import AgentEvent
from behest.fold.engine import HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC
from behest.fold.layout import Layout
from behest.fold.projection import Projection, combine, fold_by_key
from behest.fold.projector import Projector
from behest.fold.sequences import RunHead
from behest.fold.store import StateStore
from behest.projections import RunStateProjection, ToolUsageProjection
from behest.testing import sample_run

RUN_STATE = RunStateProjection()
Record = tuple[bytes | None, bytes | None]


def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> list[tuple[int, int]]:
    """Produce `(key, value)` records in order; their `(partition, offset)`s, in that order."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5}
    )
    delivered: dict[int, tuple[int, int]] = {}
    errors: list[Any] = []

    def reporter(index: int) -> Any:
        def report(error: Any, message: Any) -> None:
            if error is not None:
                errors.append(error)
            else:
                delivered[index] = (message.partition(), message.offset())

        return report

    for index, (key, value) in enumerate(records):
        producer.produce(topic, key=key, value=value, on_delivery=reporter(index))
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors
    return [delivered[i] for i in range(len(delivered))]


def as_records(events: Iterable[AgentEvent]) -> list[Record]:
    return [(str(e.run_id).encode(), encode(e)) for e in events]


def stored(projector: Projector) -> dict[bytes, Any]:
    """Every entity's state, its partitions' shares combined (one share when run-keyed)."""
    projection = projector.projection
    return {
        key: combine(projection, [projection.decode_state(share) for share in shares])
        for key, shares in projector.store.iter_state_parts()
    }


def expected(projection: Projection[Any], events: Iterable[AgentEvent]) -> dict[bytes, Any]:
    return fold_by_key(projection, [decode_record(encode(e)) for e in events])


def runs(count: int, seed: int = 0, events: int = 20) -> list[list[AgentEvent]]:
    return [sample_run(seed=seed * 1000 + n, events=events) for n in range(count)]


def mixed(batches: list[list[AgentEvent]]) -> list[AgentEvent]:
    """Runs interleaved one event at a time, as concurrent runs reach the log."""
    longest = max(len(run) for run in batches)
    return [run[i] for i in range(longest) for run in batches if i < len(run)]


def make(settings: Settings, **kwargs: Any) -> Projector:
    kwargs.setdefault("group_id", f"projector-{uuid.uuid4().hex[:8]}")
    kwargs.setdefault("poll_timeout", 0.2)
    return Projector(settings, **kwargs)


def test_folds_the_log_exactly_and_stops_when_caught_up(
    settings: Settings, bootstrap_servers: str
) -> None:
    batches = runs(40)
    events = mixed(batches)
    delivered = produce(bootstrap_servers, settings.topic, as_records(events))
    with make(settings, batch_size=100, snapshot_every=8) as projector:
        metrics = projector.run(until_caught_up=True)
        assert stored(projector) == expected(RUN_STATE, events)
        assert metrics.events_folded == len(events)
        assert (metrics.duplicates, metrics.gaps, metrics.dead_letters) == (0, 0, 0)
        assert metrics.batches >= len(events) // 100
        ends = {p: max(o for q, o in delivered if q == p) + 1 for p, _ in delivered}
        assert projector.store.stored_offsets(settings.topic) == ends
        assert all(projector.folded_position(p) == end for p, end in ends.items())
        for run in batches:
            kept = [data for _, data in projector.store.iter_events(run[0].run_id.bytes)]
            assert kept == [encode(e) for e in run]
        group = projector.group_id
    # Kafka's committed offsets follow RocksDB's, for lag monitoring.
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group})
    try:
        committed = consumer.committed(
            [TopicPartition(settings.topic, p) for p in ends], timeout=10
        )
        assert {tp.partition: tp.offset for tp in committed} == ends
    finally:
        consumer.close()


def test_a_full_batch_that_ends_the_backlog_commits_at_once(
    settings: Settings, bootstrap_servers: str
) -> None:
    """Full batches commit at most every second (for lag monitoring only); the last one of
    a backlog commits at once, not when the next poll comes back empty (a timeout later)."""
    run = sample_run(seed=7, events=40)[:40]  # four full batches of 10: the last one too
    assert len(run) == 40
    delivered = produce(bootstrap_servers, settings.topic, as_records(run))
    partition = delivered[0][0]
    end = max(o for _, o in delivered) + 1
    group = f"projector-{uuid.uuid4().hex[:8]}"
    lag = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group})
    with make(settings, group_id=group, batch_size=10, poll_timeout=5.0) as projector:
        folding = threading.Thread(target=projector.run)
        folding.start()
        try:
            deadline = time.monotonic() + 30
            while projector.folded_position(partition) < end and time.monotonic() < deadline:
                time.sleep(0.01)
            assert projector.folded_position(partition) == end
            folded_at = time.monotonic()
            committed = -1
            while committed < end and time.monotonic() < folded_at + 10:
                (tp,) = lag.committed([TopicPartition(settings.topic, partition)], timeout=10)
                committed = tp.offset
                time.sleep(0.05)
            assert committed == end
            assert time.monotonic() - folded_at < 2.5  # well before the 5 s poll timeout
        finally:
            projector.stop()
            folding.join(30)
            lag.close()


def test_replays_fold_once_and_gaps_are_recorded(
    settings: Settings, bootstrap_servers: str
) -> None:
    clean, gappy = runs(2, seed=1)
    missing = gappy[5:8]
    kept = [e for e in gappy if e not in missing]
    # The producer retried: clean's first half reaches the log twice, in between others.
    stream = clean[:10] + kept[:6] + clean[:10] + clean[10:] + kept[6:]
    produce(bootstrap_servers, settings.topic, as_records(stream))
    with make(settings) as projector:
        metrics = projector.run(until_caught_up=True)
        assert stored(projector) == expected(RUN_STATE, clean + kept)
        assert (metrics.duplicates, metrics.gaps) == (10, 1)
        assert projector.store.get_head(clean[0].run_id.bytes) == RunHead(len(clean) - 1)
        assert projector.store.get_head(gappy[0].run_id.bytes) == RunHead(len(gappy) - 1, ((5, 7),))


def test_poison_is_dead_lettered_with_its_origin_and_the_rest_folded(
    settings: Settings, bootstrap_servers: str
) -> None:
    (run,) = runs(1, seed=2)
    key = str(run[0].run_id).encode()
    foreign = encode(run[3].model_copy(update={"run_id": uuid.uuid4()}))
    poison: list[Record] = [(b"not-a-run", encode(run[1])), (key, b"\xc3\x01junk"), (key, foreign)]
    delivered = produce(
        bootstrap_servers, settings.topic, [*as_records(run[:3]), *poison, *as_records(run[3:])]
    )
    with make(settings) as projector:
        metrics = projector.run(until_caught_up=True)
        assert stored(projector) == expected(RUN_STATE, run)
        assert metrics.dead_letters == len(poison)

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"dlq-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.dlq_topic])
    letters = []
    try:
        for _ in range(100):
            letters += [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
            if len(letters) >= len(poison):
                break
    finally:
        consumer.close()
    assert len(letters) == len(poison)
    by_offset = {}
    for letter in letters:
        headers = dict(letter.headers())
        assert headers[HEADER_TOPIC] == settings.topic.encode()
        origin = (int(headers[HEADER_PARTITION]), int(headers[HEADER_OFFSET]))
        by_offset[origin] = (letter.key(), letter.value(), headers[HEADER_ERROR].decode())
    origins = delivered[3 : 3 + len(poison)]
    for origin, (k, v) in zip(origins, poison, strict=True):
        assert by_offset[origin][:2] == (k, v)
    assert "not a run id" in by_offset[origins[0]][2]
    assert "is not the event's run_id" in by_offset[origins[2]][2]


def test_a_tombstone_deletes_the_run_and_a_restart_resumes_where_it_stopped(
    settings: Settings, bootstrap_servers: str
) -> None:
    doomed, kept = runs(2, seed=3, events=70)
    produce(bootstrap_servers, settings.topic, as_records(mixed([doomed, kept])))
    group = f"projector-{uuid.uuid4().hex[:8]}"
    key = doomed[0].run_id.bytes
    with make(settings, group_id=group, snapshot_every=16) as projector:
        projector.run(until_caught_up=True)
        store = projector.store
        assert store.snapshot_at_or_before(key, 10**6) is not None
        assert len(list(store.scan_index(b"a"))) == 2
    produce(bootstrap_servers, settings.topic, [(str(doomed[0].run_id).encode(), None)])
    with make(settings, group_id=group, snapshot_every=16) as projector:
        metrics = projector.run(until_caught_up=True)
        assert (metrics.events_folded, metrics.tombstones) == (0, 1)  # nothing folded twice
        store = projector.store
        assert stored(projector) == expected(RUN_STATE, kept)
        assert store.get_head(key) is None
        assert list(store.iter_events(key)) == []
        assert store.snapshot_at_or_before(key, 10**6) is None
        assert store.snapshot_sequence_at_or_before_time(key, 2**62) is None
        assert not [k for k in store.scan_index(b"") if k.endswith(key)]
        assert len(list(store.scan_index(b"a"))) == 1


def test_rebuild_replays_the_whole_log_into_the_same_states(
    settings: Settings, bootstrap_servers: str
) -> None:
    events = mixed(runs(10, seed=4))
    produce(bootstrap_servers, settings.topic, as_records(events))
    with make(settings, projection=ToolUsageProjection()) as projector:
        projector.run(until_caught_up=True)
        first = stored(projector)
        metrics = projector.rebuild(until_caught_up=True)
        assert metrics.records == len(events)
        assert metrics.events_folded == sum(e.type == "ToolExecutionFinished" for e in events)
        assert stored(projector) == first == expected(ToolUsageProjection(), events)
        assert projector.path == settings.state_dir / "tool_usage"


def test_read_your_writes_through_folded_position(
    settings: Settings, bootstrap_servers: str
) -> None:
    with make(settings) as projector:
        worker = threading.Thread(target=projector.run, daemon=True)
        worker.start()
        try:
            (run,) = runs(1, seed=5)
            partition, offset = produce(bootstrap_servers, settings.topic, as_records(run))[-1]
            deadline = threading.Event()
            for _ in range(300):
                if projector.folded_position(partition) > offset:
                    break
                deadline.wait(0.05)
            assert projector.folded_position(partition) > offset
            state = projector.store.get_state(run[0].run_id.bytes)
            assert state is not None
            assert RUN_STATE.decode_state(state)["sequence"] == len(run) - 1
            assert projector.metrics.assigned == (0, 1, 2)
        finally:
            projector.stop()
            worker.join(timeout=15)
        assert not worker.is_alive()


def test_clear_errors_for_a_missing_topic_and_a_locked_state_dir(
    settings: Settings, tmp_path: Path
) -> None:
    missing = settings.model_copy(update={"topic": f"absent-{uuid.uuid4().hex[:8]}"})
    with make(missing) as projector, pytest.raises(TopicMissingError, match="topics create"):
        projector.run(until_caught_up=True)
    with make(settings) as first:
        with pytest.raises(StateLockedError, match="another projector"):
            make(settings)  # the same member of the group: refused at once
        # A partition's store is locked by the projector that folds it: another projector
        # on the same state dir (a worker in another group, so also given the partition)
        # is refused when it is assigned it.
        first.run(until_caught_up=True)
        second = make(settings, worker="w2")
        with second, pytest.raises(StateLockedError, match="in use by another projector"):
            second.run(until_caught_up=True)


def test_an_empty_topic_is_caught_up_at_once(settings: Settings) -> None:
    with make(settings) as projector:
        metrics = projector.run(until_caught_up=True)
        assert (metrics.records, metrics.batches) == (0, 0)
        assert projector.store.stored_offsets(settings.topic) == {}


def test_a_single_store_state_dir_is_refused_and_rebuild_replaces_it(
    settings: Settings, bootstrap_servers: str
) -> None:
    run = runs(1, seed=6)[0]
    produce(bootstrap_servers, settings.topic, as_records(run))
    legacy = StateStore(settings.state_dir / RUN_STATE.name)  # behest before generations
    legacy.close()
    with make(settings) as projector:
        with pytest.raises(StoreError, match=r"behest project --rebuild"):
            projector.run(until_caught_up=True)
        projector.rebuild(until_caught_up=True)
        assert stored(projector) == expected(RUN_STATE, run)
    assert Layout.of(settings.state_dir, RUN_STATE.name).generations() == [1]
    assert not list((settings.state_dir / RUN_STATE.name).glob("MANIFEST-*"))
