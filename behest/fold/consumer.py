"""The projector's Kafka consumer: its configuration, the topic it checks, and the errors
that retrying cannot mend, said plainly.

Offsets live in RocksDB (`behest.fold.engine`), so librdkafka must neither commit nor
remember them itself; the consumer joins its group as a static member when the projector
has an identity (`behest.fold.membership`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from behest.config import Settings
from behest.errors import (
    BehestError,
    ConfigError,
    KafkaUnavailableError,
    MemberFencedError,
    TopicMissingError,
)
from behest.fold.membership import INSTANCE_ID_FILE

__all__ = [
    "HEARTBEAT_MS",
    "consumer_config",
    "log_end_offsets",
    "membership_refused",
    "topic_partitions",
]

log = logging.getLogger(__name__)

HEARTBEAT_MS: Final = 500
"""The group heartbeat interval (ms; a third of a shorter session). A member hears of a
rebalance only in a heartbeat's answer, so librdkafka's default (3 s) left a node's first
worker folding every partition alone for up to 3 s after its second joined (its share
uneven from then on), and a takeover waited as long after the session timed out. A beat
every 0.5 s costs the broker a small request per member."""


def consumer_config(
    settings: Settings,
    *,
    group_id: str,
    instance_id: str | None,
    on_error: Callable[[KafkaError], None],
    logger: logging.Logger,
) -> dict[str, Any]:
    """The consumer's librdkafka settings; what BEHEST_KAFKA_CONFIG sets wins over the
    session timeout and static membership (`instance_id`, None for a dynamic member)."""
    session_ms = round(settings.session_timeout * 1000)
    membership: dict[str, Any] = {
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": max(min(HEARTBEAT_MS, session_ms // 3), 100),
    }
    if instance_id is not None:
        membership["group.instance.id"] = instance_id
    return settings.librdkafka(
        **{k: v for k, v in membership.items() if k not in settings.kafka_config},
        **{
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            "error_cb": on_error,
            "logger": logger,
        },
    )


def topic_partitions(consumer: Consumer, settings: Settings, timeout: float) -> list[int]:
    """The topic's partitions; clear errors when there is no broker or no topic."""
    bootstrap = settings.bootstrap
    try:
        metadata = consumer.list_topics(timeout=timeout)
    except KafkaException as error:
        raise KafkaUnavailableError(
            f"no Kafka broker answered at {bootstrap} within {timeout:g} s "
            f"({error.args[0].str() if error.args else error}): start one with "
            "`behest broker start`, or point BEHEST_BOOTSTRAP_SERVERS at yours"
        ) from None
    topic = metadata.topics.get(settings.topic)
    if topic is None or topic.error is not None:
        raise TopicMissingError(
            f"the topic {settings.topic!r} does not exist on {bootstrap}: "
            "run `behest topics create` (or set BEHEST_TOPIC to the topic you use)"
        )
    if settings.dlq_topic not in metadata.topics:
        log.warning(
            "the dead-letter topic %r does not exist; `behest topics create` makes it",
            settings.dlq_topic,
        )
    return sorted(topic.partitions)


def log_end_offsets(
    consumer: Consumer, topic: str, partitions: Sequence[int], timeout: float
) -> dict[int, int]:
    """Per partition, the offset to reach to be caught up (0 for an empty partition)."""
    targets = {}
    deadline = time.monotonic() + timeout
    for partition in partitions:
        while True:  # a topic created a moment ago may have no leader yet: retry
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout
                )
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        targets[partition] = high if high > low else 0
    return targets


def membership_refused(
    error: KafkaError, settings: Settings, *, group_id: str, instance_id: str | None
) -> BehestError | None:
    """The errors of a group membership that retrying cannot mend, said plainly."""
    if error.code() == KafkaError.INVALID_SESSION_TIMEOUT:
        return ConfigError(
            f"the broker refuses a session timeout of {settings.session_timeout:g} s "
            "(it accepts group.min.session.timeout.ms to group.max.session.timeout.ms, "
            "6 to 1800 s by default): set --session-timeout or BEHEST_SESSION_TIMEOUT "
            "within them"
        )
    # a consumer hears of its fencing only as `_FATAL`, the cause in the text
    if error.code() == KafkaError.FENCED_INSTANCE_ID or "fenced" in error.str():
        return MemberFencedError(
            f"another projector joined group {group_id!r} as member "
            f"{instance_id}, so the broker fenced this one off: is a copy of the "
            f"state dir {settings.state_dir} in use elsewhere? Delete the "
            f"{INSTANCE_ID_FILE} file in the copy, or use --dynamic-membership there"
        )
    return None
