"""`behest node --workers 2`: two worker processes of one node split the partitions
between them and fold every run into the node's state dir, each into its own stores."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from behest.cluster.node import Node
from behest.codec import encode
from behest.config import Settings
from behest.events import AgentEvent
from behest.read.query import RunStateQuery
from behest.testing import sample_run

PARTITIONS = 6


def _produce(bootstrap: str, topic: str, runs: list[list[AgentEvent]]) -> dict[int, int]:
    """Every run's events, keyed by run id; the end offset of each partition written."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    ends: dict[int, int] = {}
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
            return
        partition, offset = message.partition(), message.offset()
        ends[partition] = max(ends.get(partition, 0), offset + 1)

    for run in runs:
        for event in run:
            key = str(event.run_id).encode()
            producer.produce(topic, key=key, value=encode(event), on_delivery=delivered)
            producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors
    return ends


def test_two_workers_share_the_partitions_and_fold_every_run(
    bootstrap_servers: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=PARTITIONS)
    runs = [sample_run(seed=seed, events=30) for seed in range(60)]
    ends = _produce(bootstrap_servers, topic, runs)
    settings = Settings(
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        state_dir=tmp_path / "state",
        session_timeout=6,
    )
    node = Node(
        settings, url="http://127.0.0.1:9", workers=2, group_id=f"test-{uuid.uuid4().hex[:8]}"
    ).start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert not node.dead_workers()
            shares = node.shares()
            if len(shares) == 2 and all(shares.values()) and dict(node.folded()) == ends:
                break
            time.sleep(0.1)
        shares = node.shares()
        assert sorted(len(share) for share in shares.values()) == [3, 3], shares
        assert sorted(p for share in shares.values() for p in share) == list(range(PARTITIONS))
        assert dict(node.folded()) == ends
    finally:
        node.stop()
    with RunStateQuery.open(settings) as query:
        for run in runs:
            state = query.get(run[0].run_id)
            assert state is not None
            assert (state.event_count, state.sequence) == (len(run), run[-1].sequence)
