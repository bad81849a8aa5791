"""Dead letters you can work with: read `<topic>.dlq`, sum it up, show one, send some back.

Every read is bounded: it takes each partition's end offset when it starts and stops there,
so `behest dlq list` ends even while a projector keeps dead-lettering. A dead letter is named
by its place in the dead-letter topic, `PARTITION:OFFSET` (what `list` and `show` print).

Replay sends chosen dead letters back to the event topic (same key, same value, Java's
partitioner, so to the run's partition), for after a fix: a published writer schema, a
projector that now folds what it refused. Nothing is folded twice: the projector skips an
event whose sequence it already folded with the same bytes, and folds a late one in its
place. A dead letter that holds only a prefix of its record (`behest.truncated`) is sent
as the original, read again from its source topic, partition and offset.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from behest import codec
from behest.config import Settings
from behest.emit.producer import PRODUCER_DEFAULTS
from behest.errors import (
    CodecError,
    ConfigError,
    KafkaUnavailableError,
    ProduceError,
    TopicMissingError,
)
from behest.fold.deadletter import HEADER_TRUNCATED
from behest.fold.engine import HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC

__all__ = [
    "HEADER_REPLAYED_FROM",
    "Letter",
    "Replayed",
    "Selection",
    "read_letters",
    "replay",
    "summarize",
]

HEADER_REPLAYED_FROM: Final = "behest.replayed.from"
"""On a replayed record: the dead letter it came from, `<dlq topic>:PARTITION:OFFSET`."""


@dataclass(frozen=True, slots=True)
class Letter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @property
    def position(self) -> str:
        """Its name: `PARTITION:OFFSET` in the dead-letter topic."""
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None

    @property
    def error(self) -> str:
        return self.header(HEADER_ERROR) or "(no behest.error header)"

    @property
    def source(self) -> tuple[str, int, int] | None:
        """The topic, partition and offset of the refused record, if the headers say."""
        topic, partition, offset = (
            self.header(HEADER_TOPIC),
            self.header(HEADER_PARTITION),
            self.header(HEADER_OFFSET),
        )
        if topic is None or partition is None or offset is None:
            return None
        try:
            return topic, int(partition), int(offset)
        except ValueError:
            return None

    @property
    def truncated(self) -> bool:
        return self.header(HEADER_TRUNCATED) == "true"


def parse_position(text: str) -> tuple[int, int]:
    """`PARTITION:OFFSET` → the pair; ConfigError saying the form otherwise."""
    partition, _, offset = text.partition(":")
    try:
        pair = int(partition), int(offset)
    except ValueError:
        pair = (-1, -1)
    if min(pair) < 0:
        raise ConfigError(
            f"{text!r} is not a dead letter's position: give PARTITION:OFFSET, as "
            "`behest dlq list` prints them (e.g. 0:17)"
        )
    return pair


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        settings.librdkafka(
            **{
                "group.id": f"behest.dlq-reader.{uuid.uuid4()}",  # assign() only: never joined
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
    )


def read_letters(settings: Settings, *, timeout: float = 10.0) -> list[Letter]:
    """Every dead letter of `settings.dlq_topic`, up to the end offsets of when it starts."""
    consumer = _consumer(settings)
    try:
        ends = _bounds(consumer, settings, timeout)
        wanted = {p: (low, high) for p, (low, high) in ends.items() if high > low}
        if not wanted:
            return []
        consumer.assign(
            [TopicPartition(settings.dlq_topic, p, lo) for p, (lo, _) in wanted.items()]
        )
        letters: list[Letter] = []
        done: set[int] = set()
        stalled = time.monotonic() + timeout
        while len(done) < len(wanted):
            messages = consumer.consume(num_messages=500, timeout=0.2)
            if not messages:
                if time.monotonic() > stalled:
                    raise KafkaUnavailableError(
                        f"reading {settings.dlq_topic!r} at {settings.bootstrap} stalled for "
                        f"{timeout:g} s"
                    )
                continue
            stalled = time.monotonic() + timeout
            for message in messages:
                partition, offset = message.partition() or 0, message.offset() or 0
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaUnavailableError(f"reading {settings.dlq_topic!r}: {error.str()}")
                if error is None and offset < wanted[partition][1]:
                    letters.append(_letter(message))
                if error is not None or offset + 1 >= wanted[partition][1]:
                    done.add(partition)
        return sorted(letters, key=lambda letter: (letter.partition, letter.offset))
    finally:
        consumer.close()


def _letter(message: object) -> Letter:
    headers = tuple((k, v or b"") for k, v in (message.headers() or []))  # type: ignore[attr-defined]
    return Letter(
        message.partition(),  # type: ignore[attr-defined]
        message.offset(),  # type: ignore[attr-defined]
        message.key(),  # type: ignore[attr-defined]
        message.value(),  # type: ignore[attr-defined]
        headers,
        message.timestamp()[1],  # type: ignore[attr-defined]
    )


def _bounds(consumer: Consumer, settings: Settings, timeout: float) -> dict[int, tuple[int, int]]:
    """Low and high watermark of each partition of the dead-letter topic."""
    topic = settings.dlq_topic
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as error:
        raise KafkaUnavailableError(
            f"no Kafka broker answered at {settings.bootstrap} within {timeout:g} s "
            f"({error.args[0].str()}): start one with `behest broker start` or set "
            "BEHEST_BOOTSTRAP_SERVERS"
        ) from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise TopicMissingError(
            f"the dead-letter topic {topic!r} does not exist at {settings.bootstrap}: run "
            "`behest topics create` (or set BEHEST_TOPIC to the event topic you use)"
        )
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        for p in sorted(found.partitions)
    }


# --- choosing and summing up ------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which dead letters: every criterion given must hold; `every` alone takes them all."""

    positions: frozenset[tuple[int, int]] = frozenset()
    error: str | None = None
    source_partition: int | None = None
    every: bool = False

    def __post_init__(self) -> None:
        chosen = bool(self.positions) or self.error is not None
        if not chosen and self.source_partition is None and not self.every:
            raise ConfigError(
                "choose the dead letters: --at PARTITION:OFFSET (repeatable), --error TEXT, "
                "--source-partition N, or --all for every one"
            )

    def __call__(self, letter: Letter) -> bool:
        if self.positions and (letter.partition, letter.offset) not in self.positions:
            return False
        if self.error is not None and self.error not in letter.error:
            return False
        source = letter.source
        return self.source_partition is None or (
            source is not None and source[1] == self.source_partition
        )


@dataclass
class Summary:
    """Counts by error and by source partition, and where each error's letters are."""

    total: int = 0
    by_error: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    where: dict[str, list[str]] = field(default_factory=dict)


def summarize(letters: Iterable[Letter]) -> Summary:
    summary = Summary()
    for letter in letters:
        summary.total += 1
        summary.by_error[letter.error] += 1
        source = letter.source
        summary.by_source["?" if source is None else f"{source[0]}[{source[1]}]"] += 1
        summary.where.setdefault(letter.error, []).append(letter.position)
    return summary


def describe(letter: Letter, *, limit: int = 256) -> list[tuple[str, str]]:
    """`(label, text)` rows showing one dead letter: headers, key, the value as text and hex
    (its first `limit` bytes), and the event when it decodes now."""
    rows = [("position", f"{letter.position} (timestamp {letter.timestamp_ms} ms)")]
    rows += [(f"header {key}", value.decode(errors="replace")) for key, value in letter.headers]
    rows.append(("key", _bytes_text(letter.key, limit)))
    value = letter.value
    rows.append(("value size", "null (a tombstone)" if value is None else f"{len(value)} bytes"))
    if value is not None:
        rows.append(("value as text", _bytes_text(value, limit)))
        rows.append(("value as hex", _hex(value[:limit]) + (" …" if len(value) > limit else "")))
        try:
            event = codec.decode(value)
            rows.append(("decodes now as", event.model_dump_json()))
        except CodecError as error:
            rows.append(("decodes now as", f"nothing: {error}"))
    return rows


def _bytes_text(data: bytes | None, limit: int) -> str:
    if data is None:
        return "null"
    text = data[:limit].decode("utf-8", errors="backslashreplace")
    return repr(text)[1:-1] + (f" … ({len(data)} bytes)" if len(data) > limit else "")


def _hex(data: bytes) -> str:
    return " ".join(data[i : i + 4].hex(" ") for i in range(0, len(data), 4))


# --- replay -----------------------------------------------------------------------------------


@dataclass
class Replayed:
    """What a replay did: `(dead letter, partition, offset)` sent, `(dead letter, why)` not."""

    sent: list[tuple[str, int, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def replay(
    settings: Settings,
    letters: Iterable[Letter],
    *,
    timeout: float = 30.0,
    original: Callable[[Settings, str, int, int], tuple[bytes | None, bytes | None]] | None = None,
) -> Replayed:
    """Send `letters` back to the event topic, in order; raises `ProduceError` if Kafka does
    not acknowledge them within `timeout` (what was acknowledged is in the error's text)."""
    fetch = original or read_original
    outcome = Replayed()
    chosen: list[tuple[Letter, bytes | None, bytes | None]] = []
    for letter in letters:
        source = letter.source
        if source is not None and source[0] != settings.topic:
            outcome.skipped.append((letter.position, f"it came from topic {source[0]!r}"))
            continue
        key, value = letter.key, letter.value
        if letter.truncated:
            if source is None:
                outcome.skipped.append((letter.position, "truncated, and its source is unknown"))
                continue
            try:
                key, value = fetch(settings, *source)
            except (KafkaUnavailableError, TopicMissingError) as error:
                outcome.skipped.append((letter.position, f"truncated, and {error}"))
                continue
        chosen.append((letter, key, value))
    if not chosen:
        return outcome
    largest = max(len(key or b"") + len(value or b"") for _, key, value in chosen)
    producer = Producer(
        {
            **PRODUCER_DEFAULTS,
            "message.max.bytes": max(1_000_000, largest + 10_000),  # as big as it came
            **settings.librdkafka(),
            "client.id": "behest-dlq-replay",
        }
    )
    failures: list[str] = []

    def delivered(position: str) -> Callable[[KafkaError | None, object], None]:
        def report(error: KafkaError | None, message: object) -> None:
            if error is not None:
                failures.append(f"{position}: {error.str()}")
            else:
                outcome.sent.append(
                    (position, message.partition(), message.offset())  # type: ignore[attr-defined]
                )

        return report

    for letter, key, value in chosen:
        try:
            producer.produce(
                settings.topic,
                value,
                key,
                headers=[
                    (HEADER_REPLAYED_FROM, f"{settings.dlq_topic}:{letter.position}".encode())
                ],
                timestamp=_event_millis(value),
                on_delivery=delivered(letter.position),
            )
        except KafkaException as error:
            failures.append(f"{letter.position}: {error.args[0].str()}")
            break
        producer.poll(0)
    pending = producer.flush(timeout)
    if pending or failures:
        reason = failures[0] if failures else f"{pending} not acknowledged within {timeout:g} s"
        raise ProduceError(
            f"replayed {len(outcome.sent)} of {len(chosen)} dead letters to "
            f"{settings.topic!r}; then: {reason}. Replaying them again is safe"
        )
    outcome.sent.sort()
    return outcome


def _event_millis(value: bytes | None) -> int:
    """The event's own time (the log's time index stays by event time); 0 (now) if the
    value does not decode here."""
    try:
        return int(codec.decode_record(value)["timestamp"]) // 1000  # type: ignore[arg-type]
    except (CodecError, KeyError, TypeError):
        return 0


def read_original(
    settings: Settings, topic: str, partition: int, offset: int, *, timeout: float = 10.0
) -> tuple[bytes | None, bytes | None]:
    """Key and value of the record at `topic[partition]@offset`."""
    consumer = _consumer(settings)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1, timeout=0.2):
                if message.error() is None and message.offset() == offset:
                    return message.key(), message.value()
                deadline = 0.0  # another offset, or the end: it was compacted or deleted
        raise KafkaUnavailableError(f"its original at {topic}[{partition}]@{offset} is gone")
    finally:
        consumer.close()
