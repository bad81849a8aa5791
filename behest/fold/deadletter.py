"""Dead letters onto `<topic>.dlq`: every refused record, whatever its size, or a clear stop.

A record is sent as it was (key, value, and headers saying where it came from and why it
was refused) when it fits in a Kafka message; a bigger one (the broker accepts records
far larger than a default producer sends) goes as a bounded prefix of its key and value,
with headers that give its original sizes. Should the broker still refuse it as too
large (a dead-letter topic with a small `max.message.bytes`), the prefix shrinks, down to
the headers alone. Any other failure is retried; when it persists, `send` raises
`ProduceError`, and the batch fold, which sends its dead letters before it writes
anything, stops without having written the batch: nothing is skipped, and the next start
reads the same records again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer

from behest.config import Settings
from behest.errors import ProduceError
from behest.fold.engine import DeadLetter

__all__ = [
    "HEADER_ORIGINAL_KEY_SIZE",
    "HEADER_ORIGINAL_SIZE",
    "HEADER_TRUNCATED",
    "MAX_WHOLE_BYTES",
    "PREFIXES",
    "DeadLetterSender",
    "dead_letter_message",
]

log = logging.getLogger(__name__)

HEADER_ORIGINAL_SIZE: Final = "behest.original.size"
"""Bytes of the refused record's value, when only a prefix of it was dead-lettered."""
HEADER_ORIGINAL_KEY_SIZE: Final = "behest.original.key.size"
"""Bytes of the refused record's key, likewise."""
HEADER_TRUNCATED: Final = "behest.truncated"
"""`true` when key and value are prefixes: such a dead letter cannot be replayed."""

MAX_WHOLE_BYTES: Final = 900_000
"""Key plus value up to this go whole: below librdkafka's default `message.max.bytes`
(1,000,000) and the broker's default `max.message.bytes` (1,048,588), headers included."""
PREFIXES: Final = (65_536, 1_024, 0)
"""The prefix sizes tried, in turn, for a record too large to go whole."""
ATTEMPTS: Final = 3
"""Rounds of sending before a failure to dead-letter stops the projector."""

Headers = list[tuple[str, str | bytes | None]]
Message = tuple[bytes | None, bytes | None, Headers]


def dead_letter_message(letter: DeadLetter, prefix: int | None = None) -> Message:
    """`(key, value, headers)` of a dead letter: whole, or (with `prefix`, or when the
    record is over `MAX_WHOLE_BYTES`) its first `prefix` bytes and its original sizes."""
    key, value = letter.key, letter.value
    headers: Headers = letter.headers()
    size = len(key or b"") + len(value or b"")
    if prefix is None:
        if size <= MAX_WHOLE_BYTES:
            return key, value, headers
        prefix = PREFIXES[0]
    headers += [
        (HEADER_ORIGINAL_SIZE, str(len(value or b"")).encode()),
        (HEADER_ORIGINAL_KEY_SIZE, str(len(key or b"")).encode()),
        (HEADER_TRUNCATED, b"true"),
    ]
    return (
        None if key is None else key[:prefix],
        None if value is None else value[:prefix],
        headers,
    )


_TOO_LARGE: Final = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
_NO_TOPIC: Final = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})


class DeadLetterSender:
    """Sends dead letters to the dead-letter topic and waits until Kafka has them all."""

    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.topic = settings.dlq_topic
        self.timeout = timeout
        self._producer: Producer | None = None
        self._topic_seen = False

    def _client(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                self.settings.librdkafka(
                    **{
                        "acks": "all",
                        "enable.idempotence": True,
                        "linger.ms": 5,
                        "message.timeout.ms": int(self.timeout * 1000),
                        "partitioner": "murmur2_random",
                        "logger": logging.getLogger("behest.librdkafka"),
                    }
                )
            )
        return self._producer

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Produce every letter and wait for Kafka's acknowledgement, or raise
        `ProduceError` (after `ATTEMPTS` rounds) saying what failed and what to do."""
        todo: dict[int, int | None] = dict.fromkeys(range(len(letters)))  # index: its cut
        for letter in letters:
            log.warning(
                "dead-lettering %s[%d]@%d to %s: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                self.topic,
                letter.error,
            )
        failures = 0
        while True:
            if not self._topic_seen:
                self._check_topic()
            errors: list[KafkaError] = []
            todo, failed = self._round(letters, todo, errors)
            if not todo:
                return
            if not failed:  # only records the broker found too large: a smaller cut next
                continue
            failures += 1
            if failures == ATTEMPTS:
                break
            log.warning(
                "could not dead-letter %d record(s) (attempt %d of %d): %s",
                len(todo),
                failures,
                ATTEMPTS,
                errors[0].str(),
            )
            self.close()  # a fresh producer for the next round (an idempotent one can fence)
            self._topic_seen = False  # did the topic go away?
        raise ProduceError(
            f"could not dead-letter {len(todo)} record(s) to {self.topic!r} "
            f"({errors[0].str()}); the batch was not written, so its records are read again "
            f"on the next start: check that {self.topic!r} exists (`behest topics create`) "
            "and the broker accepts writes"
        )

    def _round(
        self,
        letters: Sequence[DeadLetter],
        todo: dict[int, int | None],
        errors: list[KafkaError],
    ) -> tuple[dict[int, int | None], bool]:
        """Send each letter of `todo` once: the ones to send again, with their next cut,
        and whether any failed for another reason than its size."""
        producer = self._client()
        retry: dict[int, int | None] = {}

        def report(index: int, cut: int | None) -> Any:
            def delivered(error: KafkaError | None, _message: Any) -> None:
                if error is not None:
                    smaller = error.code() in _TOO_LARGE and cut != PREFIXES[-1]
                    retry[index] = _next_cut(cut) if smaller else cut
                    errors.append(error)
                    if not smaller:
                        errors.insert(0, errors.pop())  # the reason to report

            return delivered

        for index, cut in todo.items():
            key, value, headers = dead_letter_message(letters[index], cut)
            while True:
                try:
                    producer.produce(
                        self.topic, value, key, headers=headers, on_delivery=report(index, cut)
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
                except KafkaException as exc:  # too large for the producer itself
                    error = exc.args[0]
                    if error.code() not in _TOO_LARGE or cut == PREFIXES[-1]:
                        raise ProduceError(
                            f"cannot dead-letter to {self.topic!r}: {error.str()}"
                        ) from None
                    cut = _next_cut(cut)
                    key, value, headers = dead_letter_message(letters[index], cut)
        if producer.flush(self.timeout + 10):
            errors.insert(0, KafkaError(KafkaError._MSG_TIMED_OUT, "no acknowledgement in time"))
            return dict(todo), True
        hard = any(error.code() not in _TOO_LARGE for error in errors) or any(
            cut == PREFIXES[-1] and todo.get(index) == cut for index, cut in retry.items()
        )
        return retry, hard

    def _check_topic(self) -> None:
        """Raise at once if the dead-letter topic does not exist (rather than let each
        record wait out its timeout)."""
        try:
            metadata = self._client().list_topics(self.topic, timeout=self.timeout)
        except KafkaException as exc:
            raise ProduceError(
                f"cannot dead-letter to {self.topic!r}: no broker answered "
                f"({exc.args[0].str() if exc.args else exc}); the batch was not written"
            ) from None
        found = metadata.topics.get(self.topic)
        if found is None or (found.error is not None and found.error.code() in _NO_TOPIC):
            raise ProduceError(
                f"the dead-letter topic {self.topic!r} does not exist, so records that "
                "cannot be folded have nowhere to go; the batch was not written: run "
                "`behest topics create` (it creates the topic and its dead-letter topic)"
            )
        self._topic_seen = True

    def close(self) -> None:
        """Flush what is in flight and drop the producer."""
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None


def _next_cut(cut: int | None) -> int:
    """The next smaller prefix after `cut` (None: whole); the last one stays."""
    if cut is None:
        return PREFIXES[0]
    smaller = [size for size in PREFIXES if size < cut]
    return smaller[0] if smaller else PREFIXES[-1]
