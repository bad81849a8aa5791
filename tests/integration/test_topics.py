"""Topic administration on a real broker, through the API and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from behest.admin import create_topics, ensure_topic_exists, partition_count, topic_config
from behest.config import Settings
from behest.errors import KafkaUnavailableError, TopicMissingError
from behest.local.ports import free_port

BEHEST = str(Path(sys.executable).with_name("behest"))


@pytest.fixture
def fresh(bootstrap_servers: str, admin_client: AdminClient) -> Iterator[Settings]:
    """Settings naming a topic that does not exist yet (deleted, with its DLQ, afterwards)."""
    settings = Settings(bootstrap_servers=bootstrap_servers, topic=f"t-{uuid.uuid4().hex[:12]}")
    yield settings
    futures = admin_client.delete_topics(
        [settings.topic, settings.dlq_topic, settings.schemas_topic]
    )
    for future in futures.values():
        try:
            future.result(timeout=30)
        except Exception:  # noqa: S112 - one that was never created
            continue


def test_create_is_idempotent_and_keeps_everything(fresh: Settings) -> None:
    first = create_topics(fresh, partitions=4)
    assert [(r.name, r.created, r.partitions) for r in first] == [
        (fresh.topic, True, 4),
        (fresh.dlq_topic, True, 4),
        (fresh.schemas_topic, True, 1),
    ]
    again = create_topics(fresh, partitions=9)
    assert [(r.name, r.created, r.partitions) for r in again] == [
        (fresh.topic, False, 4),
        (fresh.dlq_topic, False, 4),
        (fresh.schemas_topic, False, 1),
    ]
    assert "already exists (4 partitions, replication factor 1)" in str(again[0])
    for name in (fresh.topic, fresh.dlq_topic):
        config = topic_config(fresh, name)
        assert config["retention.ms"] == "-1"
        assert config["cleanup.policy"] == "delete"
    assert topic_config(fresh, fresh.schemas_topic)["cleanup.policy"] == "compact"
    assert partition_count(fresh) == 4
    assert ensure_topic_exists(fresh) == 4


def test_missing_topic_says_how_to_create_it(fresh: Settings) -> None:
    with pytest.raises(TopicMissingError, match=r"does not exist .*behest topics create --topic"):
        ensure_topic_exists(fresh)
    with pytest.raises(TopicMissingError):
        partition_count(fresh, "no-such-topic")


def test_no_broker_is_a_clear_error_within_seconds() -> None:
    nowhere = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(KafkaUnavailableError, match=r"no Kafka broker answered at 127\.0\.0\.1"):
        create_topics(nowhere, timeout=2)
    assert time.monotonic() - started < 6
    with pytest.raises(KafkaUnavailableError, match="behest broker start"):
        ensure_topic_exists(nowhere, timeout=2)


def behest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEHEST_")}
    return subprocess.run(
        [BEHEST, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_cli_create_twice_then_unreachable(fresh: Settings) -> None:
    flags = ["--bootstrap-servers", fresh.bootstrap, "--topic", fresh.topic]
    first = behest("topics", "create", "--partitions", "2", *flags)
    assert first.returncode == 0, first.stderr
    assert f"{fresh.topic}: created (2 partitions, replication factor 1)" in first.stdout
    assert f"{fresh.dlq_topic}: created (2 partitions, replication factor 1)" in first.stdout
    second = behest("topics", "create", *flags)
    assert second.returncode == 0, second.stderr
    assert f"{fresh.topic}: already exists (2 partitions, replication factor 1)" in second.stdout
    assert "keeps its 2 partitions (asked for 6)" in second.stderr
    assert "schemas keeps" not in second.stderr

    nowhere = f"127.0.0.1:{free_port()}"
    down = behest("topics", "create", "--bootstrap-servers", nowhere, "--timeout", "1")
    assert down.returncode == 1
    assert down.stderr.startswith("error: no Kafka broker answered")
    assert "Traceback" not in down.stderr
