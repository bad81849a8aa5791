"""`behest broker start --nodes 3`: a local three-node KRaft cluster survives losing a node.

Runs on the session's cluster of its own (`kafka_cluster`: own ports and data dirs), whatever
broker the other tests use; test_scale_out shares it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from behest.admin import create_topics, topic_config
from behest.config import Settings
from behest.local.cluster import LocalCluster

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17+")


def _produce(bootstrap: str, topic: str, values: list[bytes], timeout: float = 30.0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    errors: list[KafkaError] = []
    for value in values:
        producer.produce(
            topic, key=value, value=value, on_delivery=lambda e, _m: errors.append(e) if e else None
        )
    assert producer.flush(timeout) == 0
    assert errors == []


def _read_all(bootstrap: str, topic: str, partitions: int, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
    finally:
        consumer.close()
    return got


def test_three_nodes_replicate_and_survive_a_killed_node(kafka_cluster: LocalCluster) -> None:
    cluster = kafka_cluster
    status = cluster.status()
    assert status.bootstrap is not None
    assert all(pid is not None for pid in status.nodes.values())
    settings = Settings(bootstrap_servers=status.bootstrap, topic=f"c-{uuid.uuid4().hex[:8]}")

    results = create_topics(settings, partitions=3, timeout=30)

    assert [r.replication for r in results] == [3, 3, 3]  # events, dead letters, schemas
    assert topic_config(settings)["min.insync.replicas"] == "2"
    _produce(status.bootstrap, settings.topic, [b"before-%d" % i for i in range(30)])

    cluster.kill_node(2)
    assert cluster.status().nodes[2] is None
    # acks=all with one replica of three gone: min.insync.replicas=2 still holds
    _produce(status.bootstrap, settings.topic, [b"during-%d" % i for i in range(30)], 60)

    cluster.start_node(2, timeout=90)
    assert cluster.status().nodes[2] is not None
    _produce(status.bootstrap, settings.topic, [b"after-%d" % i for i in range(30)])
    got = _read_all(status.bootstrap, settings.topic, 3, 90)
    assert sorted(got) == sorted(
        [b"%s-%d" % (w, i) for w in (b"before", b"during", b"after") for i in range(30)]
    )


def test_the_command_line_reports_the_cluster(kafka_cluster: LocalCluster) -> None:
    behest = [sys.executable, "-m", "behest.cli"]
    status = subprocess.run(
        [*behest, "broker", "status", "--data-dir", str(kafka_cluster.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "node 1 pid" in status.stdout and "node 3 pid" in status.stdout
    again = subprocess.run(
        [*behest, "broker", "start", "--data-dir", str(kafka_cluster.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert again.stdout.strip() == kafka_cluster.status().bootstrap
