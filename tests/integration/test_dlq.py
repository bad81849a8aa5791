"""`behest dlq list | show | replay` on a real broker: the round trip after a fix.

An event written with a writer schema nobody published is dead-lettered; after the schema
is published, `behest dlq replay` sends it back and the projector folds it in its place (it
is late: the run went on without it). Replaying again duplicates nothing. A dead letter that
holds only a prefix of its record is replayed whole, from its source.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from behest import codec
from behest.config import Settings
from behest.dlq import HEADER_REPLAYED_FROM, Selection, read_letters, replay
from behest.events import AgentEvent, ModelStarted, RunStarted
from behest.fold.projector import Projector
from behest.read.query import RunStateQuery

pytestmark = pytest.mark.kafka


def behest(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEHEST_")}
    env |= {"BEHEST_BOOTSTRAP_SERVERS": settings.bootstrap, "BEHEST_TOPIC": settings.topic}
    return subprocess.run(
        [sys.executable, "-m", "behest.cli", "dlq", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "partitioner": "murmur2_random",
            "message.max.bytes": 2_000_000,
        }
    )
    for key, value in records:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def event(run: uuid.UUID, sequence: int, payload: Any) -> bytes:
    return codec.encode(AgentEvent(run_id=run, sequence=sequence, payload=payload))


def newer_schema() -> dict[str, Any]:
    schema = copy.deepcopy(codec.CURRENT.raw)
    schema["fields"].append({"name": "tenant", "type": "string", "default": ""})
    return schema


def written_with(schema: dict[str, Any], run: uuid.UUID, sequence: int) -> bytes:
    body = io.BytesIO()
    record = {
        "event_id": str(uuid.uuid4()),
        "run_id": str(run),
        "sequence": sequence,
        "timestamp": datetime(2026, 12, 1, 12, tzinfo=UTC),
        "payload": ("behest.ModelStarted", {"provider": "java", "model": "m", "iteration": 2}),
        "tenant": "acme",
    }
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return codec.MAGIC + codec.schema_fingerprint(schema) + body.getvalue()


def fold(settings: Settings, run: uuid.UUID) -> tuple[Any, list[int], Any]:
    """Fold to the end: the run's state and event sequences, and this pass's metrics."""
    with Projector(settings, poll_timeout=0.2) as projector:
        metrics = projector.run(until_caught_up=True)
        query = RunStateQuery(projector.store)
        return query.get(run), [e.sequence for e in query.list_events(run)], metrics


@pytest.fixture
def dlq_settings(settings: Settings, make_topic: Callable[..., str]) -> Settings:
    make_topic(settings.schemas_topic, partitions=1, config={"cleanup.policy": "compact"})
    return settings.model_copy(update={"schema_wait": 0.5})


def test_replay_round_trip_after_publishing_the_schema(dlq_settings: Settings) -> None:
    settings = dlq_settings
    versions = dict(codec.VERSIONS)
    run, junk_run = uuid.uuid4(), uuid.uuid4()
    schema = newer_schema()
    key = str(run).encode()
    produce(
        settings,
        settings.topic,
        [
            (key, event(run, 0, RunStarted(session_id=uuid.uuid4(), provider="p", model="m"))),
            (key, written_with(schema, run, 1)),  # nobody published this schema yet
            (key, event(run, 2, ModelStarted(provider="p", model="m", iteration=3))),
            (str(junk_run).encode(), b"junk" * 250_000),  # 1 MB: dead-lettered as a prefix
        ],
    )
    try:
        _, _, metrics = fold(settings, run)
        assert metrics.dead_letters == 2
        listed = behest(settings, "list")
        assert listed.returncode == 0, listed.stderr
        assert "2 dead letters" in listed.stdout
        assert "unknown writer schema fingerprint" in listed.stdout
        assert f"{settings.topic}[" in listed.stdout  # counts by source partition

        letters = read_letters(settings)
        unknown = next(x for x in letters if "unknown writer schema" in x.error)
        shown = behest(settings, "show", unknown.position)
        assert shown.returncode == 0, shown.stderr
        assert str(run) in shown.stdout
        assert "c3 01" in shown.stdout  # the value's header, in hex
        assert behest(settings, "show", "9:999").returncode == 1
        refused = behest(settings, "replay")  # no choice made: nothing is sent
        assert refused.returncode == 1
        assert "--all" in refused.stderr

        # the fix: publish the schema; then send that dead letter back
        fp = codec.schema_fingerprint(schema)
        produce(
            settings, settings.schemas_topic, [(fp.hex().encode(), json.dumps(schema).encode())]
        )
        sent = behest(settings, "replay", "--error", "unknown writer schema")
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith(f"sent {unknown.position} to {settings.topic}[")
        state, sequences, metrics = fold(settings, run)
        assert (state.event_count, state.sequence, metrics.late_repaired) == (3, 2, 1)
        assert sequences == [0, 1, 2]

        # again, everything: the folded event is a duplicate, the junk a dead letter again
        again = behest(settings, "replay", "--all")
        assert again.returncode == 0, again.stderr
        state, sequences, metrics = fold(settings, run)
        assert (metrics.duplicates, metrics.dead_letters, metrics.events_folded) == (1, 1, 0)
        assert (state.event_count, sequences) == (3, [0, 1, 2])
    finally:
        codec.VERSIONS.clear()
        codec.VERSIONS.update(versions)

    # the truncated junk went back whole, read from its source
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": str(uuid.uuid4())})
    partitions = consumer.list_topics(settings.topic, timeout=10).topics[settings.topic].partitions
    consumer.assign([TopicPartition(settings.topic, p, 0) for p in partitions])
    replayed: list[int] = []
    for _ in range(40):
        for message in consumer.consume(100, 0.5):
            headers = dict(message.headers() or [])
            if message.key() == str(junk_run).encode() and HEADER_REPLAYED_FROM in headers:
                replayed.append(len(message.value()))
        if replayed:
            break
    consumer.close()
    assert replayed == [1_000_000]


def test_selection_needs_a_choice_and_combines() -> None:
    from behest.errors import ConfigError

    with pytest.raises(ConfigError, match="--all"):
        Selection()
    assert Selection(every=True).every
    assert replay(Settings(), []).sent == []
