"""Why an event was not delivered, as a `ProduceError` message that says what to do about it
(a broker that is not there, a topic that does not exist, a closed producer), for both
clients: confluent-kafka's error codes and aiokafka's exceptions."""

from __future__ import annotations

from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnknownTopicOrPartitionError,
)
from confluent_kafka import KafkaError

__all__ = ["describe_aiokafka_error", "describe_error"]

_TIMED_OUT = {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT}
_NO_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}


def _too_large(what: str, topic: str) -> str:
    return (
        f"{what} is larger than Kafka accepts (the producer's message.max.bytes or topic "
        f"{topic!r}'s max.message.bytes): keep large content out of events (store it "
        "elsewhere and emit a reference), or raise both limits"
    )


def describe_error(
    error: KafkaError,
    *,
    topic: str,
    bootstrap: str,
    key: bytes | str | None,
    timeout_s: float,
    last_error: KafkaError | None = None,
) -> str:
    """A `ProduceError` message that says what failed and what to do about it."""
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    what = f"an event of run {key}" if key else "an event"
    code = error.code()
    if code in _TIMED_OUT:
        seen = f" (last broker error: {last_error.str()})" if last_error is not None else ""
        return (
            f"{what} was not acknowledged by Kafka at {bootstrap} within {timeout_s:g}s"
            f"{seen}: is a broker running there, and does topic {topic!r} exist? Start a "
            "broker with `behest broker start` (or set BEHEST_BOOTSTRAP_SERVERS) and create "
            "the topic with `behest topics create`"
        )
    if code in _NO_TOPIC:
        return (
            f"topic {topic!r} does not exist at {bootstrap}, so {what} was not delivered: "
            "run `behest topics create`"
        )
    if code in _TOO_LARGE:
        return _too_large(what, topic)
    if code in _PURGED:
        return f"{what} was dropped because the producer was closed before Kafka acknowledged it"
    return f"{what} was not delivered to topic {topic!r} at {bootstrap}: {error.str()}"


def describe_aiokafka_error(
    error: BaseException, *, topic: str, bootstrap: str, key: bytes | None, timeout_s: float
) -> str:
    """`describe_error` for the asyncio producer's (aiokafka's) exceptions."""
    what = f"an event of run {key.decode(errors='replace')}" if key else "an event"
    if isinstance(error, UnknownTopicOrPartitionError):
        return (
            f"topic {topic!r} does not exist at {bootstrap}, so {what} was not delivered: "
            "run `behest topics create`"
        )
    if isinstance(error, MessageSizeTooLargeError | RecordListTooLargeError):
        return _too_large(what, topic)
    if isinstance(error, KafkaTimeoutError):
        return (
            f"{what} was not acknowledged by Kafka at {bootstrap} within {timeout_s:g}s "
            f"({error}): is a broker running there, and does topic {topic!r} exist? Start one "
            "with `behest broker start`, create the topic with `behest topics create`"
        )
    return f"{what} was not delivered to topic {topic!r} at {bootstrap}: {error!r}"
