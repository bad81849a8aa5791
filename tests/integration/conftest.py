"""A real Kafka for every test under tests/integration, started once per session when needed.

Where the broker comes from, first match wins:

1. `BEHEST_BOOTSTRAP_SERVERS` is set: that Kafka (nothing is started or stopped);
2. `BEHEST_TEST_BROKER=testcontainers` and a Docker engine answers: the `apache/kafka` image at
   `behest.local.runtime.KAFKA_VERSION` (the version compose and the local broker run);
3. otherwise a `behest.local.broker.LocalBroker` on a free port, with its data in
   `.cache/test-broker-<pid>`, stopped and removed at the end of the session.

Each test gets its own topic (`unique_topic`) and consumer group (`unique_group`), so tests
never share state, even on a shared broker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from behest.config import Settings, project_home
from behest.local.broker import LocalBroker
from behest.local.cluster import LocalCluster
from behest.local.ports import free_port
from behest.local.runtime import KAFKA_VERSION

HERE = Path(__file__).resolve().parent
TEST_PARTITIONS = 3


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in this folder `kafka` (the hook sees the whole session's items)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.kafka)


def _docker_answers() -> bool:
    """True if a Docker engine answers a ping (testcontainers needs one)."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    """The official `apache/kafka` image at the version `behest broker start` runs (and
    docker/compose.yml names), single-node KRaft, its client port on a free host port."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = free_port()
    image = os.environ.get("BEHEST_TEST_KAFKA_IMAGE", f"apache/kafka:{KAFKA_VERSION}")
    container = (
        DockerContainer(image)
        .with_bind_ports(9092, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_LISTENERS="HOST://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093",
            KAFKA_ADVERTISED_LISTENERS=f"HOST://127.0.0.1:{port}",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="HOST:PLAINTEXT,CONTROLLER:PLAINTEXT",
            KAFKA_INTER_BROKER_LISTENER_NAME="HOST",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
        .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(90))
    )
    with container:
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    """Bootstrap servers of a real Kafka for the whole session (see the module docstring)."""
    if configured := os.environ.get("BEHEST_BOOTSTRAP_SERVERS"):
        yield configured
        return
    if os.environ.get("BEHEST_TEST_BROKER") == "testcontainers" and _docker_answers():
        with _kafka_container() as bootstrap:
            yield bootstrap
        return
    data_dir = project_home() / f"test-broker-{os.getpid()}"
    broker = LocalBroker(data_dir)
    try:
        status = broker.start(free_port())
        assert status.bootstrap is not None
        yield status.bootstrap
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_client(bootstrap_servers: str) -> AdminClient:
    """One admin client for the session's broker."""
    return AdminClient({"bootstrap.servers": bootstrap_servers})


def _unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _wait_for_leaders(admin: AdminClient, topic: str, partitions: int) -> None:
    """Wait until the broker's metadata shows every partition with a leader.

    Topic creation returns once the controller committed it; a client asking a broker right
    after may still hear "unknown topic" (auto-creation is off on the local broker).
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if (
            found
            and found.error is None
            and len(found.partitions) == partitions
            and all(part.leader >= 0 for part in found.partitions.values())
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"topic {topic} has no leader for all {partitions} partitions after 30 s")


@pytest.fixture
def make_topic(admin_client: AdminClient) -> Iterator[Callable[..., str]]:
    """A factory of fresh topics (infinite retention), deleted when the test ends.

    `make_topic()` names one; `make_topic("name", partitions=6, config={...})` is explicit.
    """
    created: list[str] = []

    def make(
        name: str | None = None,
        *,
        partitions: int = TEST_PARTITIONS,
        config: dict[str, str] | None = None,
    ) -> str:
        name = name or _unique_name("behest-test")
        topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config={"retention.ms": "-1", **(config or {})},
        )
        admin_client.create_topics([topic], operation_timeout=30)[name].result(timeout=30)
        created.append(name)
        _wait_for_leaders(admin_client, name, partitions)
        return name

    yield make
    if created:
        for future in admin_client.delete_topics(created, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # cleanup only; the broker may be going away
                future.result(timeout=30)


@pytest.fixture
def unique_topic(make_topic: Callable[..., str]) -> str:
    """A fresh event topic (3 partitions, `retention.ms=-1`) plus its `<topic>.dlq`."""
    topic = make_topic()
    make_topic(f"{topic}.dlq")
    return topic


@pytest.fixture
def unique_group() -> str:
    """A fresh consumer group id."""
    return _unique_name("behest-test-group")


@pytest.fixture
def settings(bootstrap_servers: str, unique_topic: str, tmp_path: Path) -> Settings:
    """behest Settings aimed at the session's broker, this test's topic and a fresh state dir."""
    return Settings(
        bootstrap_servers=bootstrap_servers, topic=unique_topic, state_dir=tmp_path / "state"
    )


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[LocalCluster]:
    """A local three-broker KRaft cluster of its own (own ports and data dir), for the
    tests of failover; started once, on first use, and stopped at the end."""
    data_dir = project_home() / f"test-cluster-{uuid.uuid4().hex[:8]}"
    cluster = LocalCluster(data_dir, nodes=3)
    try:
        cluster.start(0, timeout=120)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
