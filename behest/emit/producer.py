"""Emit `AgentEvent`s to Kafka from any service: the synchronous producer (confluent-kafka).

    with EventProducer(Settings()) as producer:
        recorder = producer.run(session_id=session_id)
        recorder.start(provider="openai", model="gpt-4o")
        recorder.emit(ModelStarted(provider="openai", model="gpt-4o", iteration=1))
        delivery = recorder.emit(RunCompleted(finish_reason="stop", iterations=1)).result()

Every record is keyed by the run id's canonical text and placed by murmur2 (the Java
client's partitioner), so a run's events stay in one partition and in order whoever
produced them. Delivery is confirmed by every in-sync replica (`acks=all`) and
idempotent (no duplicates on retry). A background thread serves delivery reports, so the
futures `emit` returns resolve without the caller polling.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from functools import partial
from typing import Any, Final, NoReturn

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from behest.config import Settings
from behest.emit.batch import BatchDelivery
from behest.emit.delivery import Delivery
from behest.emit.failures import describe_error
from behest.emit.pending import LAZY, PendingDelivery
from behest.emit.recorder import RunRecorder
from behest.emit.records import DEFAULT_MAX_BYTES, KeyedEncoder, Record, check_event, check_sizes
from behest.emit.schemas import Publication
from behest.errors import ConfigError, ProduceError
from behest.events import AgentEvent
from behest.registry import registry_encoder
from behest.telemetry import trace_headers

__all__ = [
    "DEFAULT_DELIVERY_TIMEOUT_MS",
    "PRODUCER_DEFAULTS",
    "EventProducer",
    "KeyedEncoder",
    "Record",
    "check_event",
    "describe_error",
]

log = logging.getLogger("behest.emit.producer")
_librdkafka_log = logging.getLogger("behest.emit.producer.librdkafka")

DEFAULT_DELIVERY_TIMEOUT_MS: Final = 30_000
"""How long an event may take to be acknowledged before `emit` reports a `ProduceError`."""

PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "partitioner": "murmur2_random",
    "message.timeout.ms": DEFAULT_DELIVERY_TIMEOUT_MS,
    "queue.buffering.max.messages": 500_000,
    "client.id": "behest-producer",
}
"""librdkafka settings behest uses unless `Settings.kafka_config` or overrides say otherwise.

`murmur2_random` is Java's partitioner (confluent-kafka's default is CRC32), so every
client puts a run on the same partition; lz4 is fast and aiokafka reads it via cramjam.
"""

_QUEUE_FULL_WAIT: Final = 0.005
_ANY_PARTITION: Final = -1
"""librdkafka's RD_KAFKA_PARTITION_UA: its partitioner (murmur2_random) places the record."""


class EventProducer:
    """Emits `AgentEvent`s with confluent-kafka: thread-safe, one per process is plenty.

    `overrides` are librdkafka settings applied last (e.g. `{"message.timeout.ms": 3000}`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        topic: str | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.topic = topic or self.settings.topic
        self.config: dict[str, Any] = {
            **PRODUCER_DEFAULTS,
            **self.settings.librdkafka(),
            **(overrides or {}),
        }
        self.delivery_timeout = self._delivery_timeout_s(self.config)
        self.max_bytes = int(self.config.get("message.max.bytes", DEFAULT_MAX_BYTES))
        """The largest event (key + value) `emit` sends; a larger one raises `ProduceError`."""
        self._last_error: KafkaError | None = None
        try:
            self._producer = Producer(
                {**self.config, "error_cb": self._on_client_error, "logger": _librdkafka_log}
            )
        except (KafkaException, ValueError, TypeError) as error:
            raise ConfigError(
                f"cannot create a Kafka producer with this configuration: {error}; check "
                "BEHEST_KAFKA_CONFIG and the overrides (librdkafka property names)"
            ) from None
        self._encode = KeyedEncoder(registry_encoder(self.settings, self.topic))
        self._describe_error = self._describe  # one bound method for every future and batch
        self._closed = False
        self._stop = threading.Event()
        self._schema_queued = threading.Event()
        self._emitted = False
        self._poll_interval = poll_interval
        self._poller = threading.Thread(
            target=self._poll_loop, name="behest-producer-poll", daemon=True
        )
        self._poller.start()
        threading.Thread(
            target=self._publish_schema_once, name="behest-producer-schema", daemon=True
        ).start()
        # Forgotten close(): still deliver what was queued before the interpreter exits.
        self._at_exit = weakref.finalize(
            self, _flush_at_exit, self._producer, self.settings.bootstrap, self.delivery_timeout
        )

    @staticmethod
    def _delivery_timeout_s(config: Mapping[str, Any]) -> float:
        value = config.get("delivery.timeout.ms", config.get("message.timeout.ms"))
        return int(value if value is not None else DEFAULT_DELIVERY_TIMEOUT_MS) / 1000

    # --- emitting --------------------------------------------------------------------------

    def emit(self, event: AgentEvent) -> Future[Delivery]:
        """Queue one event; the future resolves to where Kafka stored it, or to a
        `ProduceError` once the delivery timeout has passed without an acknowledgement."""
        key, value, timestamp = self._encode(
            event if isinstance(event, AgentEvent) else check_event(event)
        )
        if len(value) + len(key) > self.max_bytes:  # type: ignore[arg-type] # not a tombstone
            check_sizes([(key, value, timestamp)], self.max_bytes)
        if self._closed:
            raise ProduceError("the producer is closed; create a new EventProducer")
        self._emitted = True
        future: Future[Delivery]
        if LAZY:  # one object per event in flight: the future is its own callback
            future = PendingDelivery(self.topic, self._describe_error)
            on_delivery: Callable[[Any, Message], None] = future
        else:
            future = Future()
            future.set_running_or_notify_cancel()  # a queued event cannot be taken back
            on_delivery = partial(self._deliver, future)
        headers = trace_headers()
        try:  # positional: librdkafka's `produce` parses keywords at twice the cost
            self._producer.produce(
                self.topic, value, key, _ANY_PARTITION, on_delivery, None, timestamp, headers
            )
        except BufferError:
            self._produce_when_room(key, value, on_delivery, timestamp, headers)
        except KafkaException as error:
            raise ProduceError(self._describe(error.args[0], key)) from None
        return future

    def emit_many(self, events: Iterable[AgentEvent]) -> Future[list[Delivery]]:
        """Queue several events at once (in order); one future for all their deliveries, in
        the order of the events. The fast path for bulk producing.

        Every event is encoded before any is queued, so a bad one raises and sends nothing.
        """
        encode = self._encode
        records = [
            encode(event if isinstance(event, AgentEvent) else check_event(event))
            for event in events
        ]
        check_sizes(records, self.max_bytes)
        self._emitted = True
        batch = BatchDelivery(self.topic, records, self._describe_error)
        if not records:
            batch.future.set_result([])
            return batch.future
        if self._closed:
            raise ProduceError("the producer is closed; create a new EventProducer")
        produce = self._producer.produce
        topic = self.topic
        headers = trace_headers()  # one look-up for the batch: its events share the caller's span
        callbacks = batch.callbacks()
        for index, (key, value, timestamp) in enumerate(records):
            on_delivery = next(callbacks)
            try:  # positional, as in `emit`
                produce(topic, value, key, _ANY_PARTITION, on_delivery, None, timestamp, headers)
            except BufferError:
                try:
                    self._produce_when_room(key, value, on_delivery, timestamp, headers)
                except ProduceError as error:
                    self._abandon(batch, index, error)
            except KafkaException as error:
                self._abandon(batch, index, ProduceError(self._describe(error.args[0], key)))
        return batch.future

    def _abandon(self, batch: BatchDelivery, index: int, error: ProduceError) -> NoReturn:
        """Fail the events of a batch from `index` on, which were never queued, and raise."""
        for rest in range(index, batch.total):
            batch.fail(rest, str(error))
        raise ProduceError(
            f"queued {index} of {batch.total} events, then: {error} (the queued ones are "
            "still delivered; the batch's future reports the rest as failed)",
            tuple(range(index, batch.total)),
        ) from None

    def emit_tombstone(self, run_id: uuid.UUID | str) -> Future[Delivery]:
        """Queue a record with the run's key and no value: every projection deletes the run."""
        future: Future[Delivery] = Future()
        future.set_running_or_notify_cancel()
        self._emitted = True
        self._produce(
            self._encode.key(run_id), None, partial(self._deliver, future), 0, trace_headers()
        )
        return future

    def run(
        self,
        run_id: uuid.UUID | str | None = None,
        *,
        session_id: uuid.UUID | None = None,
        next_sequence: int = 0,
    ) -> RunRecorder:
        """A recorder that stamps event ids, sequences and times for one run (a new run
        unless `run_id` is given; pass `next_sequence` to continue an existing run)."""
        return RunRecorder(self, run_id, session_id=session_id, next_sequence=next_sequence)

    def _produce(
        self,
        key: bytes,
        value: bytes | None,
        on_delivery: Callable[[Any, Message], None],
        timestamp: int = 0,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        if self._closed:
            raise ProduceError("the producer is closed; create a new EventProducer")
        try:
            self._producer.produce(
                self.topic, value, key, _ANY_PARTITION, on_delivery, None, timestamp, headers
            )
        except BufferError:
            self._produce_when_room(key, value, on_delivery, timestamp, headers)
        except KafkaException as error:
            raise ProduceError(self._describe(error.args[0], key)) from None

    def _produce_when_room(
        self,
        key: bytes,
        value: bytes | None,
        on_delivery: Callable[[Any, Message], None],
        timestamp: int,
        headers: list[tuple[str, str | bytes | None]] | None,
    ) -> None:
        """The local queue is full: wait for deliveries to drain it, up to the timeout."""
        if self._closed:
            raise ProduceError("the producer is closed; create a new EventProducer")
        produce = partial(self._producer.produce, headers=headers)
        deadline = time.monotonic() + self.delivery_timeout
        while time.monotonic() < deadline:
            self._producer.poll(_QUEUE_FULL_WAIT)
            try:
                produce(self.topic, value, key, on_delivery=on_delivery, timestamp=timestamp)
                return
            except BufferError:
                continue
            except KafkaException as error:
                raise ProduceError(self._describe(error.args[0], key)) from None
        raise ProduceError(
            f"the local send queue stayed full for {self.delivery_timeout:g}s "
            f"({len(self._producer)} events waiting): Kafka at {self.settings.bootstrap} "
            "is not keeping up or not reachable"
        )

    # --- delivery reports (called on the poll thread) -------------------------------------

    def _deliver(self, future: Future[Delivery], error: KafkaError | None, msg: Message) -> None:
        if error is None:
            future.set_result(Delivery(self.topic, msg.partition(), msg.offset()))  # type: ignore[arg-type]
        else:
            reason = self._describe(error, msg.key())
            log.warning("event not delivered: %s", reason)  # also seen if nobody checks
            future.set_exception(ProduceError(reason))

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka retries transient errors itself; remember the last for messages."""
        self._last_error = error
        if error.fatal():
            log.error("fatal Kafka producer error: %s", error.str())
        else:
            log.debug("Kafka client error (retrying): %s", error.str())

    def _publish_schema(self) -> None:
        """Write the writer schema to `<topic>.schemas` (on a thread of its own at start, so
        neither `emit` nor delivery reports wait for it), if that topic exists: a missing
        one is not created."""
        schema = Publication(self.topic)
        while not self._stop.is_set():
            try:
                metadata = self._producer.list_topics(timeout=1.0)
                break
            except KafkaException:
                continue  # no broker yet: librdkafka keeps trying
        else:
            return
        if schema.topic not in metadata.topics:
            schema.missing(self.settings.bootstrap)
            return

        def delivered(error: KafkaError | None, _msg: Message) -> None:
            if error is not None:
                schema.failed(error.str())

        try:
            self._producer.produce(schema.topic, schema.value, schema.key, on_delivery=delivered)
        except (BufferError, KafkaException) as error:
            schema.failed(str(error))

    def _publish_schema_once(self) -> None:
        try:
            self._publish_schema()
        finally:
            self._schema_queued.set()

    def _poll_loop(self) -> None:
        poll = self._producer.poll
        while not self._stop.is_set():
            try:
                poll(self._poll_interval)
            except Exception:  # a delivery callback must never kill the poller
                log.exception("error while serving Kafka delivery reports")

    def _describe(self, error: KafkaError, key: bytes | str | None) -> str:
        return describe_error(
            error,
            topic=self.topic,
            bootstrap=self.settings.bootstrap,
            key=key,
            timeout_s=self.delivery_timeout,
            last_error=self._last_error,
        )

    # --- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every queued event is acknowledged or failed (or `timeout` seconds);
        returns how many are still waiting (0: all done)."""
        return self._producer.flush(-1 if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to `timeout`, default the delivery timeout), fail what is left with a
        `ProduceError`, and stop the poll thread. Idempotent."""
        if self._closed:
            return
        budget = self.delivery_timeout if timeout is None else timeout
        started = time.monotonic()
        if self._emitted:  # the schema record goes out with the events
            self._schema_queued.wait(budget)
        remaining = self.flush(max(0.0, budget - (time.monotonic() - started)))
        self._closed = True
        if remaining:
            self._producer.purge(in_queue=True, in_flight=True)
            self._producer.flush(1.0)  # serve the purge reports: their futures fail
        self._stop.set()
        self._poller.join()
        self._at_exit.detach()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Events queued or in flight, not yet acknowledged."""
        return len(self._producer)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventProducer(bootstrap={self.settings.bootstrap!r}, topic={self.topic!r})"


def _flush_at_exit(producer: Producer, bootstrap: str, timeout: float) -> None:
    remaining = producer.flush(timeout)
    if remaining:
        log.error(
            "%d events were never acknowledged by Kafka at %s: close the EventProducer "
            "(or use it in a `with` block) before the process exits",
            remaining,
            bootstrap,
        )
