"""Simulated traffic lands on the real broker exactly as the summary says."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from behest import codec
from behest.config import Settings
from behest.emit.partitioner import partition_for
from behest.errors import TopicMissingError
from behest.events import TERMINAL_TYPES
from behest.local.simulate import simulate
from behest.local.traffic import plan_runs

PARTITIONS = 3
FAST = {"message.timeout.ms": 5000}


def consume_all(settings: Settings, expected: int, timeout: float = 30.0) -> list[Message]:
    """Every record of the topic from offset 0, once `expected` have arrived (plus any
    duplicate that shows up within half a second more)."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "check"})
    try:
        consumer.assign(
            [TopicPartition(settings.topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            records += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        records += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        return records
    finally:
        consumer.close()


def test_summary_matches_the_log(settings: Settings) -> None:
    summary = simulate(settings, 24, concurrency=6, seed=5, overrides=FAST)
    plans = plan_runs(24, 5)
    assert summary.runs == 24
    assert summary.run_ids == [p.run_id for p in plans]
    assert summary.events == sum(p.event_count() for p in plans)
    assert sum(summary.statuses.values()) == 24
    assert summary.by_producer["confluent-kafka"] > 0
    assert summary.by_producer["aiokafka"] > 0

    records = consume_all(settings, summary.events)
    assert len(records) == summary.events
    sequences: dict[uuid.UUID, list[int]] = defaultdict(list)
    terminal: dict[uuid.UUID, str] = {}
    for message in sorted(records, key=lambda m: (m.partition(), m.offset())):
        event = codec.decode(message.value())
        assert message.partition() == partition_for(event.run_id, PARTITIONS)
        sequences[event.run_id].append(event.sequence)
        if event.type in TERMINAL_TYPES:
            terminal[event.run_id] = event.type.removeprefix("Run").lower()
    assert set(sequences) == set(summary.run_ids)
    assert all(seq == list(range(len(seq))) for seq in sequences.values())
    outcomes = {str(p.run_id): str(p.outcome) for p in plans}
    assert {str(r): terminal.get(r, "active") for r in sequences} == outcomes

    # the summary's last delivery per partition is the end of each partition's log
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "watermarks"})
    try:
        for partition, delivery in summary.last_delivery.items():
            _, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topic, partition), timeout=10
            )
            assert delivery.offset == high - 1
    finally:
        consumer.close()


def test_same_seed_same_ids(settings: Settings) -> None:
    first = simulate(settings, 3, seed=9, overrides=FAST)
    second = simulate(settings, 3, seed=9, overrides=FAST)
    assert first.run_ids == second.run_ids
    assert first.events == second.events
    records = consume_all(settings, 2 * first.events)
    event_ids = [codec.decode(m.value()).event_id for m in records]
    assert len(event_ids) == 2 * first.events
    assert len(set(event_ids)) == first.events  # seeded: the replay repeats every id


def test_missing_topic_is_reported_up_front(bootstrap_servers: str) -> None:
    missing = Settings(bootstrap_servers=bootstrap_servers, topic=f"missing-{uuid.uuid4().hex}")
    with pytest.raises(TopicMissingError, match="behest topics create"):
        simulate(missing, 2)


def test_cli(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEHEST_")}
    behest = str(Path(sys.executable).with_name("behest"))
    result = subprocess.run(
        [
            *(behest, "simulate", "--runs", "4", "--concurrency", "2", "--seed", "1"),
            *("--bootstrap-servers", settings.bootstrap, "--topic", settings.topic),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = sum(p.event_count() for p in plan_runs(4, 1))
    assert f"produced {expected} events of 4 runs" in " ".join(result.stdout.split())
    assert len(consume_all(settings, expected)) == expected
