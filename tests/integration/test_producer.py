"""Both producers on a real broker: deliveries, partitions, order, tombstones, failures."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import confluent_kafka
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Message, TopicPartition
from opentelemetry import trace

from behest import codec
from behest.config import Settings
from behest.emit.aio import AsyncEventProducer
from behest.emit.delivery import Delivery
from behest.emit.partitioner import partition_for, run_key
from behest.emit.producer import EventProducer
from behest.emit.recorder import RunStamper
from behest.errors import ProduceError
from behest.events import AgentEvent, ModelStarted, RunId, TextDelta, TokenUsage, UsageRecorded
from behest.local.ports import free_port
from tests.otel import memory_exporter

PARTITIONS = 3
FAST = {"message.timeout.ms": 3000}


def consume_all(settings: Settings, expected: int, timeout: float = 20.0) -> list[Message]:
    """Every record of the topic from offset 0, once `expected` of them have arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        consumer.assign(
            [
                TopicPartition(settings.topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(PARTITIONS)
            ]
        )
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                assert message.error() is None, message.error()
                records.append(message)
        # Anything beyond the expected count would be a duplicate: give it a moment to show.
        records.extend(m for m in consumer.consume(500, timeout=0.5) if m.error() is None)
        return records
    finally:
        consumer.close()


def millis(event: AgentEvent) -> int:
    """The event's time as the Kafka record timestamp the producers give it."""
    return (event.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def run_events(count: int, run_id: uuid.UUID | None = None) -> list[AgentEvent]:
    stamper = RunStamper(run_id)
    events = [stamper.stamp(stamper.run_started("openai", "gpt-4o", metadata={"n": count}))]
    events.append(stamper.stamp(ModelStarted(provider="openai", model="gpt-4o", iteration=1)))
    events += [stamper.stamp(TextDelta(delta=f"part {i} ")) for i in range(count - 3)]
    events.append(stamper.stamp(UsageRecorded(usage=TokenUsage.new(10, 5))))
    return events


@pytest.fixture
def sync_producer(settings: Settings) -> Iterator[EventProducer]:
    with EventProducer(settings, FAST) as producer:
        yield producer


# --- delivery ----------------------------------------------------------------------------


def test_sync_emit_reports_where_each_event_was_stored(
    settings: Settings, sync_producer: EventProducer
) -> None:
    events = run_events(6)
    deliveries = [sync_producer.emit(event).result(timeout=15) for event in events]
    partition = partition_for(events[0].run_id, PARTITIONS)
    assert {d.topic for d in deliveries} == {settings.topic}
    assert {d.partition for d in deliveries} == {partition}
    assert [d.offset for d in deliveries] == list(range(6))  # fresh topic: offsets from 0
    records = consume_all(settings, 6)
    assert [(m.partition(), m.offset()) for m in records] == [(partition, i) for i in range(6)]
    for message, event in zip(records, events, strict=True):
        assert message.key() == str(event.run_id).encode()
        assert codec.decode(message.value()) == event
        assert message.timestamp() == (TIMESTAMP_CREATE_TIME, millis(event))


async def test_async_emit_reports_where_each_event_was_stored(settings: Settings) -> None:
    events = run_events(5)
    async with AsyncEventProducer(settings, FAST) as producer:
        futures = [producer.emit(event) for event in events]  # queued without awaiting
        deliveries = await asyncio.gather(*futures)
        assert await producer.flush(5) == 0
    partition = partition_for(events[0].run_id, PARTITIONS)
    assert deliveries == [Delivery(settings.topic, partition, i) for i in range(5)]
    records = await asyncio.to_thread(consume_all, settings, 5)
    assert [codec.decode(m.value()) for m in records] == events
    assert [m.timestamp() for m in records] == [(TIMESTAMP_CREATE_TIME, millis(e)) for e in events]
    assert {m.key() for m in records} == {str(events[0].run_id).encode()}


def test_emit_many_resolves_in_event_order(
    settings: Settings, sync_producer: EventProducer
) -> None:
    first, second = run_events(4), run_events(3)
    mixed = [first[0], second[0], first[1], second[1], first[2], second[2], first[3]]
    deliveries = sync_producer.emit_many(mixed).result(timeout=15)
    assert [d.partition for d in deliveries] == [partition_for(e.run_id, PARTITIONS) for e in mixed]
    assert sync_producer.emit_many([]).result(timeout=1) == []
    assert sync_producer.flush(5) == 0
    assert len(sync_producer) == 0
    by_partition: dict[int, list[int]] = defaultdict(list)
    for d in deliveries:
        by_partition[d.partition].append(d.offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())


def test_emit_many_reports_each_events_own_position(settings: Settings) -> None:
    """The batch's one callback finds each report's event by its bytes; an event queued
    twice (same bytes) makes the batch fall back to a callback per event."""
    first, second = run_events(5), run_events(4)
    mixed = [e for pair in zip(first, second, strict=False) for e in pair] + [first[4]]
    with EventProducer(settings, FAST) as producer:
        deliveries = producer.emit_many(mixed).result(timeout=15)
        twice = producer.emit_many([second[0], second[0]]).result(timeout=15)
    records = consume_all(settings, len(mixed) + 2)
    stored = {(m.partition(), m.offset()): codec.decode(m.value()) for m in records}
    assert [stored[(d.partition, d.offset)] for d in deliveries] == mixed
    assert twice[0] != twice[1]
    assert [stored[(d.partition, d.offset)] for d in twice] == [second[0], second[0]]


# --- partition agreement ----------------------------------------------------------------


async def test_all_clients_and_the_java_formula_agree_on_partitions(
    settings: Settings, sync_producer: EventProducer
) -> None:
    run_ids = [RunId(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(60)]
    expected = [partition_for(run_id, PARTITIONS) for run_id in run_ids]
    assert set(expected) == set(range(PARTITIONS))  # the sample covers every partition
    # confluent's own Java-compatible hash agrees with the pure function
    assert expected == [confluent_kafka.murmur2(run_key(r), PARTITIONS) for r in run_ids]

    sync = [sync_producer.emit_tombstone(r).result(timeout=15).partition for r in run_ids]
    async with AsyncEventProducer(settings, FAST) as producer:
        aio = [d.partition for d in await asyncio.gather(*map(producer.emit_tombstone, run_ids))]
    # aiokafka with its stock partitioner, which ports Java's DefaultPartitioner
    stock = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await stock.start()
    try:
        acks = [await stock.send(settings.topic, b"x", key=run_key(r)) for r in run_ids]
        plain = [(await ack).partition for ack in acks]
    finally:
        await stock.stop()
    assert sync == expected
    assert aio == expected
    assert plain == expected


# --- order and sequences ---------------------------------------------------------------


async def test_per_run_order_and_sequences_survive_interleaving(
    settings: Settings, sync_producer: EventProducer
) -> None:
    sync_runs = [run_events(12) for _ in range(4)]
    async_runs = [run_events(9) for _ in range(4)]
    # interleave the runs of each producer event by event
    for round_ in range(12):
        for events in sync_runs:
            if round_ < len(events):
                sync_producer.emit(events[round_])
    async with AsyncEventProducer(settings, FAST) as producer:
        futures = [producer.emit(events[round_]) for round_ in range(9) for events in async_runs]
        await asyncio.gather(*futures)
    assert sync_producer.flush(10) == 0
    total = 4 * 12 + 4 * 9
    records = await asyncio.to_thread(consume_all, settings, total)
    assert len(records) == total  # none lost, none duplicated
    seen: dict[bytes, list[tuple[int, int, int]]] = defaultdict(list)
    for message in records:
        event = codec.decode(message.value())
        seen[message.key()].append((message.partition(), message.offset(), event.sequence))
    assert len(seen) == 8
    for key, placed in seen.items():
        partitions = {p for p, _, _ in placed}
        assert partitions == {partition_for(key, PARTITIONS)}
        in_log_order = [sequence for _, _, sequence in sorted(placed)]
        assert in_log_order == list(range(len(placed)))


# --- tombstones ------------------------------------------------------------------------


def test_tombstone_has_the_run_key_and_no_value(
    settings: Settings, sync_producer: EventProducer
) -> None:
    run_id = uuid.uuid4()
    sync_producer.emit(run_events(3, run_id)[0]).result(timeout=15)
    delivery = sync_producer.emit_tombstone(str(run_id).upper()).result(timeout=15)
    assert delivery.partition == partition_for(run_id, PARTITIONS)
    records = consume_all(settings, 2)
    assert [(m.key(), m.value() is None) for m in records] == [
        (str(run_id).encode(), False),
        (str(run_id).encode(), True),
    ]


# --- failures --------------------------------------------------------------------------


def unreachable() -> Settings:
    return Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="behest-nowhere")


def test_sync_unreachable_broker_fails_within_the_timeout() -> None:
    started = time.monotonic()
    with EventProducer(unreachable(), FAST) as producer:
        future = producer.emit(run_events(3)[0])
        batch = producer.emit_many(run_events(3))
        with pytest.raises(
            ProduceError, match=r"not acknowledged .* within 3s.*behest broker start"
        ):
            future.result(timeout=15)
        with pytest.raises(ProduceError, match=r"3 of 3 events were not delivered .* within 3s"):
            batch.result(timeout=15)
        assert batch.exception().failed == (0, 1, 2)  # type: ignore[union-attr]
    assert time.monotonic() - started < 8


async def test_async_unreachable_broker_fails_within_the_timeout() -> None:
    started = time.monotonic()
    async with AsyncEventProducer(unreachable(), FAST) as producer:
        future = producer.emit(run_events(3)[0])
        batch = producer.emit_many(run_events(3))
        with pytest.raises(ProduceError, match=r"no Kafka broker answered .* within 3s"):
            await asyncio.wait_for(future, 15)
        with pytest.raises(ProduceError, match="behest broker start") as failure:
            await asyncio.wait_for(batch, 15)
        assert failure.value.failed == (0, 1, 2)
    assert time.monotonic() - started < 8


async def test_what_is_not_an_event_is_refused_before_kafka(settings: Settings) -> None:
    garbage = {"run_id": "x", "payload": "y"}
    with EventProducer(settings, FAST) as producer:
        with pytest.raises(TypeError, match="takes an AgentEvent"):
            producer.emit(garbage)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="a payload"):
            producer.emit_many([TextDelta(delta="x")])  # type: ignore[list-item]
        assert len(producer) == 0
    with pytest.raises(ProduceError, match="closed"):
        producer.emit(run_events(3)[0])
    async with AsyncEventProducer(settings, FAST) as aio:
        with pytest.raises(TypeError, match="takes an AgentEvent"):
            aio.emit(garbage)  # type: ignore[arg-type]
        assert len(aio) == 0
    with pytest.raises(ProduceError, match="closed"):
        aio.emit(run_events(3)[0])
    with pytest.raises(ProduceError, match="not started"):
        AsyncEventProducer(settings).emit(run_events(3)[0])


def test_missing_topic_names_the_fix(bootstrap_servers: str) -> None:
    missing = Settings(bootstrap_servers=bootstrap_servers, topic=f"missing-{uuid.uuid4().hex}")
    with (
        EventProducer(missing, {"message.timeout.ms": 2000}) as producer,
        pytest.raises(ProduceError, match="behest topics create"),
    ):
        producer.emit(run_events(3)[0]).result(timeout=15)


def too_large(run_id: uuid.UUID, size: int) -> AgentEvent:
    """An event of `size` bytes or more, whose text does not compress."""
    text = "".join(uuid.uuid4().hex for _ in range(size // 32 + 1))
    return RunStamper(run_id, next_sequence=5).stamp(TextDelta(delta=text))


async def test_oversize_events_are_refused_before_anything_is_sent(settings: Settings) -> None:
    run = uuid.uuid4()
    fine, huge = run_events(3, run), too_large(run, 1_100_000)
    with EventProducer(settings, FAST) as producer:
        with pytest.raises(ProduceError, match=r"the event \(run .*\) is 1,1\d\d,\d\d\d bytes"):
            producer.emit(huge)
        with pytest.raises(ProduceError, match=r"event 1 of the batch .* nothing was sent"):
            producer.emit_many([fine[0], huge, fine[1]])
        assert len(producer) == 0
    async with AsyncEventProducer(settings, FAST) as aio:
        with pytest.raises(ProduceError, match="store it elsewhere and emit a reference"):
            aio.emit(huge)
        with pytest.raises(ProduceError, match=r"event 2 of the batch"):
            aio.emit_many([*fine[:2], huge])
        assert len(aio) == 0
    small = {"message.max.bytes": 5_000}  # the limit is the configured one, for both
    with (
        EventProducer(settings, {**FAST, **small}) as producer,
        pytest.raises(ProduceError, match="more than the 5,000 a Kafka record may have"),
    ):
        producer.emit(too_large(run, 6_000))
    async with AsyncEventProducer(settings, {**FAST, **small}) as aio:
        with pytest.raises(ProduceError, match="more than the 5,000 a Kafka record may have"):
            aio.emit_many([too_large(run, 6_000)])


def runs_apart(count: int) -> tuple[uuid.UUID, uuid.UUID]:
    """Two runs whose events land on different partitions (of `count`)."""
    first = uuid.uuid4()
    while True:
        second = uuid.uuid4()
        if partition_for(second, count) != partition_for(first, count):
            return first, second


async def test_a_batch_names_the_events_the_broker_refused(
    bootstrap_servers: str, make_topic: Callable[..., str]
) -> None:
    """A record the topic refuses (over its max.message.bytes, under the producer's limit)
    fails with its position in the batch; the batch's other events are delivered."""
    topic = make_topic(config={"max.message.bytes": "20000"})
    settings = Settings(bootstrap_servers=bootstrap_servers, topic=topic)
    kept, refused = runs_apart(PARTITIONS)
    fine = run_events(4, kept)
    batch = [fine[0], fine[1], too_large(refused, 40_000), fine[2], fine[3]]
    with EventProducer(settings, FAST) as producer:
        future = producer.emit_many(batch)
        with pytest.raises(ProduceError, match=r"1 of 5 events .* \(positions 2 in the batch\)"):
            future.result(timeout=15)
        assert future.exception().failed == (2,)  # type: ignore[union-attr]
    async with AsyncEventProducer(settings, FAST) as aio:
        with pytest.raises(ProduceError, match="larger than Kafka accepts") as failure:
            await aio.emit_many(batch)
        assert failure.value.failed == (2,)
    delivered = await asyncio.to_thread(consume_all, settings, 8)
    assert sorted(codec.decode(m.value()).sequence for m in delivered) == [0, 0, 1, 1, 2, 2, 3, 3]


async def test_async_singles_carry_their_own_trace_context(settings: Settings) -> None:
    """Consecutive `emit` calls share a queued item only while their trace context is the
    same: each record carries the span it was emitted in, or none."""
    memory_exporter()
    tracer = trace.get_tracer("agent-service")
    events = run_events(7)
    spans: list[int | None] = []
    async with AsyncEventProducer(settings, FAST) as aio:
        futures = [aio.emit(events[0]), aio.emit(events[1])]
        spans += [None, None]
        with tracer.start_as_current_span("step a") as first:
            futures += [aio.emit(events[2]), aio.emit(events[3])]
            spans += [first.get_span_context().span_id] * 2
        futures.append(aio.emit(events[4]))
        spans.append(None)
        with tracer.start_as_current_span("step b") as second:
            futures += [aio.emit(events[5]), aio.emit_many([events[6]])]  # type: ignore[list-item]
            spans += [second.get_span_context().span_id] * 2
        await asyncio.gather(*futures)
    records = await asyncio.to_thread(consume_all, settings, len(events))
    carried = {codec.decode(m.value()).sequence: dict(m.headers() or []) for m in records}
    for event, span in zip(events, spans, strict=True):
        headers = carried[event.sequence]
        if span is None:
            assert "traceparent" not in headers, event.sequence
        else:
            assert headers["traceparent"].split(b"-")[2] == f"{span:016x}".encode()


# --- recorders ---------------------------------------------------------------------------


async def test_recorders_stamp_runs_for_both_producers(
    settings: Settings, sync_producer: EventProducer
) -> None:
    recorder = sync_producer.run()
    recorder.start("anthropic", "claude-sonnet-4", metadata={"app": "test"})
    recorder.emit(ModelStarted(provider="anthropic", model="claude-sonnet-4", iteration=1))
    last = recorder.complete().result(timeout=15)
    async with AsyncEventProducer(settings, FAST) as producer:
        arecorder = producer.run(session_id=recorder.session_id)
        arecorder.start("openai", "gpt-4o")
        arecorder.emit_many([TextDelta(delta="a"), TextDelta(delta="b")])
        alast = await arecorder.fail("boom")
    assert last.partition == partition_for(recorder.run_id, PARTITIONS)
    assert alast.partition == partition_for(arecorder.run_id, PARTITIONS)
    records = await asyncio.to_thread(consume_all, settings, 7)
    events = sorted(
        (codec.decode(m.value()) for m in records), key=lambda e: (str(e.run_id), e.sequence)
    )
    by_run: dict[uuid.UUID, list[str]] = defaultdict(list)
    for event in events:
        by_run[event.run_id].append(f"{event.sequence}:{event.type}")
    assert by_run == {
        recorder.run_id: ["0:RunStarted", "1:ModelStarted", "2:RunCompleted"],
        arecorder.run_id: ["0:RunStarted", "1:TextDelta", "2:TextDelta", "3:RunFailed"],
    }


async def test_async_batches_split_and_offsets_match_the_log(settings: Settings) -> None:
    """Many events, small record batches: each batch's base offset must map to the right
    events (checked against what a consumer reads back)."""
    runs = [run_events(40) for _ in range(25)]
    events = [event for sequence in zip(*runs, strict=True) for event in sequence]
    async with AsyncEventProducer(settings, {**FAST, "max_batch_size": 4096}) as producer:
        first = producer.emit_many(events[:500])
        singles = [producer.emit(event) for event in events[500:600]]
        rest = producer.emit_many(events[600:])
        deliveries = [*await first, *await asyncio.gather(*singles), *await rest]
    assert len(deliveries) == len(events) == 1000
    records = await asyncio.to_thread(consume_all, settings, len(events))
    assert len(records) == len(events)
    stored = {(m.partition(), m.offset()): codec.decode(m.value()).event_id for m in records}
    assert {
        (d.partition, d.offset): e.event_id for d, e in zip(deliveries, events, strict=True)
    } == stored
