"""Topic administration: the event topic, its dead-letter and schemas topics, and questions.

The event topic is the source of truth, so it keeps everything (`retention.ms=-1`,
`cleanup.policy=delete`: a tombstone removes a run from projections, not from the log).
Every call first checks that a broker answers, within seconds, so a missing broker is a
clear `KafkaUnavailableError` instead of a hang.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    NewTopic,
)

from behest.config import DEFAULT_TOPIC, Settings
from behest.errors import KafkaUnavailableError, TopicMissingError

__all__ = [
    "DEFAULT_PARTITIONS",
    "SCHEMAS_TOPIC_CONFIG",
    "TOPIC_CONFIG",
    "TopicResult",
    "admin_client",
    "create_topics",
    "ensure_topic_exists",
    "fitting_replication",
    "min_insync",
    "partition_count",
    "topic_config",
]

log = logging.getLogger("behest.admin")

DEFAULT_PARTITIONS: Final = 6
CONNECT_TIMEOUT: Final = 5.0
TOPIC_CONFIG: Final[dict[str, str]] = {"retention.ms": "-1", "cleanup.policy": "delete"}
"""The log is the truth: keep every event forever."""
SCHEMAS_TOPIC_CONFIG: Final[dict[str, str]] = {"cleanup.policy": "compact", "retention.ms": "-1"}
"""Writer schemas by fingerprint: compaction keeps the latest record of each, forever."""


@dataclass(frozen=True)
class TopicResult:
    """What `create_topics` found or did for one topic."""

    name: str
    created: bool
    partitions: int
    replication: int = 0
    """Replicas per partition (0: not known)."""

    def __str__(self) -> str:
        verb = "created" if self.created else "already exists"
        replicas = f", replication factor {self.replication}" if self.replication else ""
        return f"{self.name}: {verb} ({self.partitions} partitions{replicas})"


def admin_client(settings: Settings, **overrides: Any) -> AdminClient:
    """A confluent-kafka admin client for `settings`, logging through Python's `logging`
    (not to stderr) so command-line output stays readable."""
    return AdminClient(settings.librdkafka(logger=log, **overrides))


def _metadata(
    admin: AdminClient, settings: Settings, topic: str | None, timeout: float
) -> ClusterMetadata:
    try:
        return admin.list_topics(topic=topic, timeout=timeout)
    except KafkaException as error:
        raise KafkaUnavailableError(
            f"no Kafka broker answered at {settings.bootstrap} within {timeout:g}s "
            f"({error.args[0].str()}): start one with `behest broker start` or set "
            "BEHEST_BOOTSTRAP_SERVERS"
        ) from None


def _partitions_of(metadata: ClusterMetadata, topic: str) -> int | None:
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        return None
    return len(found.partitions)


def create_topics(
    settings: Settings,
    partitions: int = DEFAULT_PARTITIONS,
    *,
    replication_factor: int = -1,
    timeout: float = CONNECT_TIMEOUT,
) -> list[TopicResult]:
    """Create the event topic and `<topic>.dlq` (infinite retention), and `<topic>.schemas`
    (compacted, one partition: the writer schemas producers publish); a topic that exists
    already is left as it is and reported. Waits until all are usable.

    `replication_factor=-1` fits the cluster found: `fitting_replication(brokers)`, with
    `min.insync.replicas` one less (at most 2), so an acknowledged write survives the loss
    of a broker wherever there are three.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be 1 or more, got {partitions}")
    admin = admin_client(settings)
    names = [settings.topic, settings.dlq_topic, settings.schemas_topic]
    existing = _metadata(admin, settings, None, timeout)
    missing = [name for name in names if _partitions_of(existing, name) is None]
    created: set[str] = set()
    if missing:
        if replication_factor == -1:
            replication_factor = fitting_replication(len(existing.brokers))
        config = {**TOPIC_CONFIG, "min.insync.replicas": str(min_insync(replication_factor))}
        schemas = {**config, **SCHEMAS_TOPIC_CONFIG}
        new = [
            NewTopic(name, 1, replication_factor, config=schemas)
            if name == settings.schemas_topic
            else NewTopic(name, partitions, replication_factor, config=config)
            for name in missing
        ]
        for name, future in admin.create_topics(new, request_timeout=timeout).items():
            try:
                future.result()
                created.add(name)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                    raise KafkaUnavailableError(
                        f"cannot create topic {name!r} at {settings.bootstrap}: "
                        f"{error.args[0].str()}"
                    ) from None
    counts = _wait_until_visible(admin, settings, names, timeout=max(timeout, 10.0))
    return [TopicResult(name, name in created, *counts[name]) for name in names]


def fitting_replication(brokers: int) -> int:
    """The replication factor for a cluster of `brokers`: 3 where it can be, else all."""
    return max(1, min(3, brokers))


def min_insync(replication_factor: int) -> int:
    """`min.insync.replicas` for a replication factor: one replica may be down (at most 2)."""
    return max(1, min(2, replication_factor - 1))


def _wait_until_visible(
    admin: AdminClient, settings: Settings, names: list[str], *, timeout: float
) -> dict[str, tuple[int, int]]:
    """(partitions, replicas) of `names`, once every broker knows them and every partition
    has a leader: a topic is not writable the instant CreateTopics returns, and in KRaft
    each broker learns of it from the metadata log a moment later, so a client asking
    another broker right away would be told it does not exist."""
    deadline = time.monotonic() + timeout
    metadata = _metadata(admin, settings, None, timeout)  # lists every live broker
    pending = sorted(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    counts: dict[str, tuple[int, int]] = {}
    while True:
        for broker in list(pending):
            # a fresh client bootstrapped on this broker alone sends it the first request
            asked = admin_client(settings, **{"bootstrap.servers": broker})
            found = _leaders(_metadata(asked, settings, None, timeout), names)
            if len(found) == len(names):
                counts = found
                pending.remove(broker)
        if not pending:
            return counts
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"topics {names} at {settings.bootstrap} are not known with a leader to "
                f"broker(s) {pending} after {timeout:g}s; check the brokers' logs"
            )
        time.sleep(0.1)


def _leaders(metadata: ClusterMetadata, names: list[str]) -> dict[str, tuple[int, int]]:
    """(partitions, replicas) of those of `names` whose every partition has a leader."""
    counts: dict[str, tuple[int, int]] = {}
    for name in names:
        found = metadata.topics.get(name)
        if (
            found is not None
            and found.error is None
            and found.partitions
            and all(p.leader >= 0 for p in found.partitions.values())
        ):
            replicas = len(next(iter(found.partitions.values())).replicas)
            counts[name] = (len(found.partitions), replicas)
    return counts


def partition_count(
    settings: Settings, topic: str | None = None, *, timeout: float = CONNECT_TIMEOUT
) -> int:
    """How many partitions the event topic (or `topic`) has; `TopicMissingError` if none."""
    name = topic or settings.topic
    metadata = _metadata(admin_client(settings), settings, None, timeout)
    count = _partitions_of(metadata, name)
    if count is None:
        raise TopicMissingError(
            f"topic {name!r} does not exist at {settings.bootstrap}: run `behest topics "
            + ("create`" if name == DEFAULT_TOPIC else f"create --topic {name}`")
        )
    return count


def ensure_topic_exists(settings: Settings, *, timeout: float = CONNECT_TIMEOUT) -> int:
    """Raise `TopicMissingError` unless the event topic exists; returns its partition count."""
    return partition_count(settings, timeout=timeout)


def topic_config(
    settings: Settings, topic: str | None = None, *, timeout: float = CONNECT_TIMEOUT
) -> dict[str, str]:
    """The effective configuration of a topic (e.g. `retention.ms`), as the broker reports it."""
    name = topic or settings.topic
    admin = admin_client(settings)
    partition_count(settings, name, timeout=timeout)
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout=timeout
        )
    except KafkaException as error:
        raise KafkaUnavailableError(
            f"cannot read the configuration of topic {name!r} at {settings.bootstrap}: "
            f"{error.args[0].str()}"
        ) from None
    return {key: entry.value for key, entry in entries.items() if entry.value is not None}
