"""Schema Registry users: producers write Confluent framing (00 + schema id), the projector
reads it beside single-object records, and Confluent's own `AvroDeserializer` reads what
behest wrote. The registry is confluent-kafka's in-memory one (`mock://`): no registry
server can be started on the development machine."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer

from behest.config import Settings
from behest.emit.aio import AsyncEventProducer
from behest.emit.producer import EventProducer
from behest.fold.projector import Projector
from behest.read.query import RunStateQuery
from behest.registry import registry_client
from behest.testing import sample_run

pytest.importorskip("confluent_kafka.schema_registry.avro", reason="behest[registry] is missing")


async def test_framed_and_single_object_records_fold_alike(
    settings: Settings, unique_group: str
) -> None:
    url = f"mock://behest-{uuid.uuid4().hex[:8]}"
    framed = settings.model_copy(update={"registry_url": url, "registry_write": True})
    plain_run, sync_run, async_run = (sample_run(events=25, seed=s) for s in (1, 2, 3))
    with EventProducer(settings) as plain:  # single-object, as without a registry
        plain.emit_many(plain_run).result(30)
    with EventProducer(framed) as producer:
        producer.emit_many(sync_run).result(30)
    async with AsyncEventProducer(framed) as aio:
        await aio.emit_many(async_run)

    # what Kafka holds is Confluent framing that Confluent's deserializer reads
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    deserialize = AvroDeserializer(registry_client(url))
    consumer = Consumer(
        settings.librdkafka(
            **{"group.id": f"raw-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([settings.topic])
    seen: dict[str, int] = {}
    try:
        total = len(plain_run) + len(sync_run) + len(async_run)
        for _ in range(200):
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            value = message.value()
            assert value is not None
            if value[:1] == b"\x00":
                context = SerializationContext(settings.topic, MessageField.VALUE)
                decoded = deserialize(value, context)
                assert decoded is not None
                run_id = str(decoded["run_id"])  # a uuid logical type: UUID
                seen[run_id] = seen.get(run_id, 0) + 1
            else:
                assert value[:2] == b"\xc3\x01"
                seen["single-object"] = seen.get("single-object", 0) + 1
            if sum(seen.values()) == total:
                break
    finally:
        consumer.close()
    assert seen == {
        "single-object": len(plain_run),
        str(sync_run[0].run_id): len(sync_run),
        str(async_run[0].run_id): len(async_run),
    }

    reading = settings.model_copy(update={"registry_url": url})
    with Projector(reading, group_id=unique_group) as projector:
        metrics = projector.run(until_caught_up=True)
    assert metrics.dead_letters == 0
    with RunStateQuery.open(settings) as query:  # readers need no registry
        for run in (plain_run, sync_run, async_run):
            state = query.get(run[0].run_id)
            assert state is not None and state.event_count == len(run)
            assert query.list_events(run[0].run_id, from_sequence=0, limit=1000) == run


def test_without_a_registry_url_framed_records_are_dead_letters(
    settings: Settings, unique_group: str
) -> None:
    url = f"mock://behest-{uuid.uuid4().hex[:8]}"
    framed = settings.model_copy(update={"registry_url": url, "registry_write": True})
    run = sample_run(events=5, seed=4)
    with EventProducer(framed) as producer:
        producer.emit_many(run).result(30)
    with Projector(settings, group_id=unique_group) as projector:
        metrics = projector.run(until_caught_up=True)
    assert metrics.dead_letters == len(run)
