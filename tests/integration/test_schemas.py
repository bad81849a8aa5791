"""Writer schemas travel with the events, on a real broker.

A producer in another language writes with a newer, compatible schema (here: fastavro and a
v3 `.avsc` this test writes, adding a field with a default) and publishes it on
`<topic>.schemas`: its events are folded, including one that reached the log before its
schema, and a run's events stay in order. An incompatible schema is refused: its events are
dead letters that say why. behest's own producers publish their schema when they start.
"""

from __future__ import annotations

import copy
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from behest import codec
from behest.config import Settings
from behest.emit.aio import AsyncEventProducer
from behest.emit.producer import EventProducer
from behest.events import AgentEvent, ModelStarted
from behest.fold.engine import HEADER_ERROR
from behest.fold.projector import Projector
from behest.read.query import RunStateQuery
from tests.schema_registry import restored_schema_registry

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True)
def _forget_published_schemas() -> Iterator[None]:
    """Each test starts from the schemas behest ships (the registry is per process)."""
    with restored_schema_registry():
        yield


@pytest.fixture
def schema_settings(settings: Settings, make_topic: Callable[..., str], tmp_path: Path) -> Settings:
    make_topic(settings.schemas_topic, partitions=1, config={"cleanup.policy": "compact"})
    return Settings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic,
        state_dir=settings.state_dir,
        schema_wait=20,
    )


def v3_schema(folder: Path, field: str) -> dict[str, Any]:
    """A v3 `.avsc`, as a newer producer ships it: the current schema plus an envelope field
    with a default (rule 1 of schemas/README.md). Written to a file, read back from it."""
    schema = copy.deepcopy(codec.CURRENT.raw)
    schema["fields"].append({"name": field, "type": "string", "default": ""})
    path = folder / f"agent_event.v3-{field}.avsc"
    path.write_text(json.dumps(schema, indent=2))
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def encode_with(schema: dict[str, Any], run_id: uuid.UUID, sequence: int, **extra: Any) -> bytes:
    """Single-object bytes written by fastavro under `schema`: a RunStarted at `sequence`."""
    body = io.BytesIO()
    record = {
        "event_id": str(uuid.uuid4()),
        "run_id": str(run_id),
        "sequence": sequence,
        "timestamp": datetime(2026, 12, 1, tzinfo=UTC),
        "payload": (
            "behest.RunStarted",
            {
                "session_id": str(uuid.uuid4()),
                "provider": "java",
                "model": "m",
                "metadata": '{"via": "v3"}',
            },
        ),
        **extra,
    }
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return codec.MAGIC + codec.schema_fingerprint(schema) + body.getvalue()


def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap, "partitioner": "murmur2_random"})
    for key, value in records:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def publish(settings: Settings, schema: dict[str, Any]) -> None:
    """What a Java/Go/Rust producer does (schemas/README.md): key = the header's 8
    fingerprint bytes as hex, value = the schema's JSON."""
    key = codec.schema_fingerprint(schema).hex().encode()
    produce(settings, settings.schemas_topic, [(key, json.dumps(schema).encode())])


def dead_letters(settings: Settings) -> list[tuple[bytes | None, str]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "enable.partition.eof": True,
        }
    )
    metadata = consumer.list_topics(settings.dlq_topic, timeout=10)
    partitions = list(metadata.topics[settings.dlq_topic].partitions)
    consumer.assign([TopicPartition(settings.dlq_topic, p, 0) for p in partitions])
    found, ended = [], set()
    deadline = time.monotonic() + 20
    while len(ended) < len(partitions) and time.monotonic() < deadline:
        for message in consumer.consume(100, timeout=0.5):
            if message.error() is not None:
                ended.add(message.partition())
                continue
            headers = dict(message.headers() or [])
            found.append((message.key(), headers[HEADER_ERROR].decode()))
    consumer.close()
    return found


def fold(settings: Settings) -> Projector:
    projector = Projector(settings, poll_timeout=0.2)
    projector.run(until_caught_up=True)
    return projector


def test_a_newer_compatible_schema_is_folded_even_when_it_arrives_after_its_event(
    schema_settings: Settings, tmp_path: Path
) -> None:
    settings = schema_settings
    early, late = uuid.uuid4(), uuid.uuid4()
    v3 = v3_schema(tmp_path, "tenant")
    v3b = v3_schema(tmp_path, "region")
    publish(settings, v3)
    produce(
        settings,
        settings.topic,
        [
            (str(early).encode(), encode_with(v3, early, 0, tenant="acme")),
            # a run whose first event is written before its schema is published, and a
            # second event (current schema) that must not be folded before the first
            (str(late).encode(), encode_with(v3b, late, 0, region="eu")),
            (str(late).encode(), codec.encode(_model_started(late, 1))),
        ],
    )
    projector = Projector(settings, poll_timeout=0.2)
    outcome: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: outcome.setdefault("m", projector.run(until_caught_up=True))
    )
    started = time.monotonic()
    worker.start()
    time.sleep(2.0)  # the projector now waits for v3b on the late run's partition
    assert worker.is_alive()
    publish(settings, v3b)
    worker.join(30)
    assert not worker.is_alive()
    assert time.monotonic() - started < 15  # resumed when the schema came, not at the deadline
    metrics = outcome["m"]
    assert metrics.dead_letters == 0
    assert metrics.events_folded == 3
    query = RunStateQuery(projector.store)
    assert query.get(early).provider == "java"
    state = query.get(late)
    assert (state.event_count, state.sequence, state.provider) == (2, 1, "java")
    assert [e.sequence for e in query.list_events(late)] == [0, 1]

    # a reader in another process knows only the shipped schemas: the store keeps the rest
    codec.VERSIONS.pop(codec.schema_fingerprint(v3b))
    assert projector.store.get_schema(codec.schema_fingerprint(v3b)) is not None
    assert [e.sequence for e in query.list_events(late)] == [0, 1]
    projector.close()
    assert dead_letters(settings) == []


def _model_started(run_id: uuid.UUID, sequence: int) -> AgentEvent:
    return AgentEvent(
        run_id=run_id,
        sequence=sequence,
        payload=ModelStarted(provider="openai", model="gpt", iteration=1),
    )


def test_an_incompatible_or_missing_schema_is_dead_lettered_with_the_reason(
    schema_settings: Settings, tmp_path: Path
) -> None:
    settings = schema_settings.model_copy(update={"schema_wait": 1.0})
    bad = copy.deepcopy(codec.CURRENT.raw)
    bad["fields"][2]["type"] = "string"  # sequence: long → string
    bad_run, missing_run, good_run = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    publish(settings, bad)
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        fastavro.parse_schema(bad),
        {
            "event_id": str(uuid.uuid4()),
            "run_id": str(bad_run),
            "sequence": "zero",
            "timestamp": 0,
            "payload": ("behest.RunCancelled", {}),
        },
    )
    never = v3_schema(tmp_path, "never_published")
    produce(
        settings,
        settings.topic,
        [
            (str(bad_run).encode(), codec.MAGIC + codec.schema_fingerprint(bad) + body.getvalue()),
            (str(missing_run).encode(), encode_with(never, missing_run, 0, never_published="x")),
            (str(good_run).encode(), codec.encode(_model_started(good_run, 0))),
        ],
    )
    projector = fold(settings)
    metrics = projector.metrics
    projector.close()
    assert metrics.events_folded == 1
    errors = dict(dead_letters(settings))
    assert "incompatible" in errors[str(bad_run).encode()]
    assert "AgentEvent.sequence: a string cannot be read as a long" in errors[str(bad_run).encode()]
    assert "unknown writer schema fingerprint" in errors[str(missing_run).encode()]


def test_both_producers_publish_their_schema(schema_settings: Settings) -> None:
    import asyncio

    settings = schema_settings
    with EventProducer(settings) as producer:
        producer.run().start(provider="p", model="m").result(30)

    async def emit() -> None:
        async with AsyncEventProducer(settings) as aio:
            await aio.run().start(provider="p", model="m")

    asyncio.run(emit())
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": f"t-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(settings.schemas_topic, 0, 0)])
    seen: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + 20
    while len(seen) < 2 and time.monotonic() < deadline:
        seen += [(m.key(), m.value()) for m in consumer.consume(10, 0.5) if m.error() is None]
    consumer.close()
    key, value = codec.CURRENT.record()
    assert seen == [(key, value), (key, value)]
    assert key == codec.CURRENT.fingerprint.hex().encode()
    assert codec.schema_fingerprint(json.loads(value)) == codec.CURRENT.fingerprint
