"""The broker behest relies on: clients round-trip through it, and `behest broker` manages it."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from behest.errors import BrokerError
from behest.local.broker import LocalBroker
from behest.local.ports import free_port

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17+")


def _consume(
    bootstrap: str, topic: str, group: str, count: int, timeout: float = 30.0
) -> list[tuple[bytes, bytes, int]]:
    """Read `count` records of `topic` from its start: (key, value, partition) each."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: list[tuple[bytes, bytes, int]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.key(), msg.value(), msg.partition()))
        if got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def _produce(bootstrap: str, topic: str, records: list[tuple[str, str]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[KafkaError] = []
    for key, value in records:
        producer.produce(
            topic,
            key=key.encode(),
            value=value.encode(),
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
    assert producer.flush(30) == 0
    assert errors == []


# --- clients against the session's broker --------------------------------------------------


def test_confluent_kafka_round_trip(
    bootstrap_servers: str, unique_topic: str, unique_group: str
) -> None:
    records = [(f"run-{i % 5}", f"event-{i}") for i in range(30)]
    _produce(bootstrap_servers, unique_topic, records)

    got = _consume(bootstrap_servers, unique_topic, unique_group, len(records))

    assert sorted((k.decode(), v.decode()) for k, v, _ in got) == sorted(records)
    partitions_per_key: dict[bytes, set[int]] = {}
    for key, _, partition in got:
        partitions_per_key.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in partitions_per_key.values())
    # in order within a key (one partition each)
    for key in partitions_per_key:
        values = [int(v.decode().split("-")[1]) for k, v, _ in got if k == key]
        assert values == sorted(values)


async def test_aiokafka_round_trip(
    bootstrap_servers: str, unique_topic: str, unique_group: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(unique_topic, key=f"run-{i % 4}".encode(), value=b"%d" % i)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        unique_topic,
        bootstrap_servers=bootstrap_servers,
        group_id=unique_group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[int] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < 20:
                batches = await consumer.getmany(timeout_ms=500)
                values += [int(msg.value) for msgs in batches.values() for msg in msgs]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(values) == list(range(20))


async def test_confluent_producer_aiokafka_consumer_agree(
    bootstrap_servers: str, unique_topic: str, unique_group: str
) -> None:
    records = [(f"run-{i % 3}", f"event-{i}") for i in range(9)]
    _produce(bootstrap_servers, unique_topic, records)
    consumer = AIOKafkaConsumer(
        unique_topic,
        bootstrap_servers=bootstrap_servers,
        group_id=unique_group,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: list[tuple[str, str]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < len(records):
                batches = await consumer.getmany(timeout_ms=500)
                for msgs in batches.values():
                    got += [(msg.key.decode(), msg.value.decode()) for msg in msgs]
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(records)


def test_topic_creation_through_admin(admin_client: AdminClient, unique_topic: str) -> None:
    name = f"{unique_topic}-admin"
    futures = admin_client.create_topics(
        [NewTopic(name, num_partitions=2, replication_factor=1, config={"retention.ms": "-1"})]
    )
    futures[name].result(timeout=30)
    try:
        again = admin_client.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
        with pytest.raises(KafkaException) as raised:
            again[name].result(timeout=30)
        assert raised.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

        # creation returns once the controller committed it; brokers learn of it a bit later
        deadline = time.monotonic() + 30
        metadata = admin_client.list_topics(timeout=10)
        while name not in metadata.topics and time.monotonic() < deadline:
            time.sleep(0.05)
            metadata = admin_client.list_topics(timeout=10)
        assert len(metadata.topics[name].partitions) == 2
        assert len(metadata.topics[unique_topic].partitions) == 3
        assert f"{unique_topic}.dlq" in metadata.topics

        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        configs = admin_client.describe_configs([resource])[resource].result(timeout=30)
        assert configs["retention.ms"].value == "-1"
    finally:
        admin_client.delete_topics([name])[name].result(timeout=30)


# --- `behest broker` on its own broker --------------------------------------------------------


def _behest_command() -> list[str]:
    script = Path(sys.executable).with_name("behest")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from behest.cli import app; app()"]


def behest(*args: object) -> subprocess.CompletedProcess[str]:
    """Run the `behest` command line as a user would."""
    return subprocess.run(
        [*_behest_command(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie or a missing process counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _broker_config(bootstrap: str, key: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    value: str = admin.describe_configs([resource])[resource].result(timeout=30)[key].value
    return value


@needs_java
def test_cli_lifecycle_and_data_survive_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "broker"
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"

    before = behest("broker", "status", "--data-dir", data_dir)
    assert before.returncode == 1
    assert "not running" in before.stdout

    started = behest("broker", "start", "--port", port, "--data-dir", data_dir)
    assert started.returncode == 0, started.stderr
    try:
        assert started.stdout.strip() == bootstrap
        assert "started" in started.stderr

        status = behest("broker", "status", "--data-dir", data_dir)
        assert status.returncode == 0
        assert bootstrap in status.stdout
        match = re.search(r"pid (\d+)", status.stdout)
        assert match
        pid = int(match.group(1))
        assert _alive(pid)

        again = behest("broker", "start", "--port", port, "--data-dir", data_dir)
        assert again.returncode == 0
        assert again.stdout.strip() == bootstrap
        assert "already running" in again.stderr

        taken = behest("broker", "start", "--port", port, "--data-dir", tmp_path / "other")
        assert taken.returncode == 1
        assert taken.stdout == ""
        assert len(taken.stderr.strip().splitlines()) == 1
        assert f"port {port}" in taken.stderr
        assert "Traceback" not in taken.stderr

        assert _broker_config(bootstrap, "auto.create.topics.enable") == "false"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("survivor", num_partitions=1, replication_factor=1)])[
            "survivor"
        ].result(timeout=30)
        records = [(f"run-{i}", f"kept-{i}") for i in range(10)]
        _produce(bootstrap, "survivor", records)

        stopped = behest("broker", "stop", "--data-dir", data_dir)
        assert stopped.returncode == 0
        assert f"pid {pid}" in stopped.stdout
        assert not _alive(pid)
        assert behest("broker", "status", "--data-dir", data_dir).returncode == 1

        restarted = behest("broker", "start", "--port", port, "--data-dir", data_dir)
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout.strip() == bootstrap
        got = _consume(bootstrap, "survivor", "after-restart", len(records))
        assert sorted((k.decode(), v.decode()) for k, v, _ in got) == sorted(records)
    finally:
        final = behest("broker", "stop", "--data-dir", data_dir)
    assert final.returncode == 0
    assert behest("broker", "status", "--data-dir", data_dir).returncode == 1
    assert not _pids_of(data_dir)


def _pids_of(data_dir: Path) -> list[int]:
    """Pids of java processes started for `data_dir` (by its server.properties path)."""
    marker = str(data_dir.resolve() / "server.properties").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes() and _alive(int(proc.name)):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@needs_java
def test_start_failures_say_why_and_leave_nothing_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "broken"

    with pytest.raises(BrokerError, match="exited during start-up") as died:
        LocalBroker(data_dir, heap="1k").start(free_port())
    assert "heap" in str(died.value).lower()
    assert not _pids_of(data_dir)

    with pytest.raises(BrokerError, match="did not answer") as slow:
        LocalBroker(data_dir).start(free_port(), timeout=0.01)
    assert "was stopped" in str(slow.value)
    assert not _pids_of(data_dir)
    assert LocalBroker(data_dir).status().running is False


def test_port_taken_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = behest("broker", "start", "--port", port, "--data-dir", tmp_path / "b")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: port {port} on 127.0.0.1 is already in use")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b" / "broker.pid").exists()
