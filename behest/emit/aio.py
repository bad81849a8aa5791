"""Emit `AgentEvent`s from asyncio services: the asynchronous producer (aiokafka).

    async with AsyncEventProducer(Settings()) as producer:
        recorder = producer.run(session_id=session_id)
        recorder.start(provider="openai", model="gpt-4o")
        delivery = await recorder.emit(TextDelta(delta="Hello"))

Same wire format, keys, partitions and guarantees as `EventProducer` (idempotent,
`acks=all`, Java's murmur2 partitioner). `emit` queues without awaiting and hands back a
future, so a runtime can fire events and move on; one sender task feeds aiokafka in emit
order, so a run's events reach the log in sequence order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from behest.config import Settings
from behest.emit.aiokafka_config import aiokafka_config
from behest.emit.delivery import Delivery
from behest.emit.failures import describe_aiokafka_error
from behest.emit.partitioner import JavaPartitioner
from behest.emit.recorder import AsyncRunRecorder
from behest.emit.records import KeyedEncoder, Record, check_event
from behest.emit.schemas import Publication
from behest.errors import ProduceError
from behest.events import AgentEvent
from behest.registry import registry_encoder
from behest.telemetry import trace_headers

__all__ = ["AsyncEventProducer", "JavaPartitioner", "aiokafka_config"]

log = logging.getLogger("behest.emit.aio")

_RETRY_BACKOFF: Final = (0.1, 0.25, 0.5, 1.0)
_NO_HEADERS: Final[list[tuple[str, bytes]]] = []  # shared, never changed


class _Item:
    """Records queued by one `emit`/`emit_many` call, waiting for the sender task;
    `deliveries` is None for a single event (its future gets the `Delivery` itself)."""

    __slots__ = ("deliveries", "future", "headers", "pending", "records", "settled")

    def __init__(self, records: list[Record], future: asyncio.Future[Any], many: bool) -> None:
        count = len(records)
        self.records = records
        self.future = future
        self.headers = trace_headers() or _NO_HEADERS  # the emitting caller's trace context
        self.deliveries: list[Delivery | None] | None = [None] * count if many else None
        self.pending = count
        self.settled = bytearray(count)


_Member = tuple[_Item, int]
"""One record of an item: the item and the record's index in it."""


class AsyncEventProducer:
    """Emits `AgentEvent`s with aiokafka. Use it from one event loop, as
    `async with AsyncEventProducer(settings) as producer:` or `start()`/`stop()`.

    `overrides` are aiokafka keywords (`request_timeout_ms=3000`) or librdkafka names
    (`message.timeout.ms`), applied last. A broker that cannot be reached does not fail
    `start()`: like confluent-kafka, the producer keeps trying, and events that are not
    acknowledged within the delivery timeout fail with `ProduceError`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        topic: str | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.topic = topic or self.settings.topic
        self.config = aiokafka_config(self.settings, overrides)
        self.delivery_timeout = int(self.config["request_timeout_ms"]) / 1000
        self._encode = KeyedEncoder(registry_encoder(self.settings, self.topic))
        self._queue: deque[_Item] = deque()
        self._client: AIOKafkaProducer | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outstanding = 0
        self._closing = False
        self._closed = False
        self._partitioner = JavaPartitioner()
        self._publishing: asyncio.Future[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender task (it connects to Kafka, retrying within the timeout)."""
        if self._closed:
            raise ProduceError("the producer is closed; create a new AsyncEventProducer")
        if self._sender is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender = self._loop.create_task(self._send_loop(), name="behest-aio-sender")

    async def flush(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 - as sync
        """Wait until every queued event is acknowledged or failed (or `timeout` seconds);
        returns how many are still waiting (0: all done)."""
        if self._idle is None:
            return 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self._outstanding

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - as sync
        """Flush (up to `timeout`, default the delivery timeout), fail what is left with a
        `ProduceError`, and disconnect. Idempotent."""
        if self._closed:
            return
        if self._sender is None:
            self._closed = True
            return
        budget = self.delivery_timeout if timeout is None else timeout
        if self._publishing is not None:  # the schema record goes out with the events
            await asyncio.wait({self._publishing}, timeout=budget)
        await self.flush(budget)
        self._closing = True
        self._closed = True
        while self._queue:
            self._fail(
                self._queue.popleft(),
                "an event was dropped: the producer was stopped before Kafka acknowledged it",
            )
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        if self._publishing is not None:
            self._publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publishing
        if self._client is not None:
            await self._client.stop()
            self._client = None

    close = stop

    async def __aenter__(self) -> AsyncEventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Events queued or in flight, not yet acknowledged."""
        return self._outstanding

    def __repr__(self) -> str:
        return f"AsyncEventProducer(bootstrap={self.settings.bootstrap!r}, topic={self.topic!r})"

    # --- emitting --------------------------------------------------------------------------

    def emit(self, event: AgentEvent) -> asyncio.Future[Delivery]:
        """Queue one event (call from the producer's loop); the future resolves to where
        Kafka stored it, or to a `ProduceError` after the delivery timeout."""
        record = self._encode(event if isinstance(event, AgentEvent) else check_event(event))
        return self._enqueue([record])

    def emit_many(self, events: Iterable[AgentEvent]) -> asyncio.Future[list[Delivery]]:
        """Queue several events at once (in order); one future for all their deliveries.

        Every event is encoded before any is queued, so a bad one raises and sends nothing.
        """
        encode = self._encode
        records: list[Record] = [
            encode(event if isinstance(event, AgentEvent) else check_event(event))
            for event in events
        ]
        return self._enqueue(records, many=True)

    def emit_tombstone(self, run_id: uuid.UUID | str) -> asyncio.Future[Delivery]:
        """Queue a record with the run's key and no value: every projection deletes the run."""
        return self._enqueue([(self._encode.key(run_id), None, 0)])

    def run(
        self,
        run_id: uuid.UUID | str | None = None,
        *,
        session_id: uuid.UUID | None = None,
        next_sequence: int = 0,
    ) -> AsyncRunRecorder:
        """A recorder that stamps event ids, sequences and times for one run (a new run
        unless `run_id` is given; pass `next_sequence` to continue an existing run)."""
        return AsyncRunRecorder(self, run_id, session_id=session_id, next_sequence=next_sequence)

    def _enqueue(self, records: list[Record], *, many: bool = False) -> asyncio.Future[Any]:
        if self._closed or self._closing:
            raise ProduceError("the producer is closed; create a new AsyncEventProducer")
        if self._loop is None or self._wakeup is None or self._idle is None:
            raise ProduceError(
                "the producer is not started: use `async with AsyncEventProducer(...)` "
                "or `await producer.start()` first"
            )
        future: asyncio.Future[Any] = self._loop.create_future()
        if not records:
            future.set_result([])
            return future
        self._queue.append(_Item(records, future, many))
        if self._outstanding == 0:
            self._idle.clear()
        self._outstanding += len(records)
        self._wakeup.set()
        return future

    # --- the sender task -------------------------------------------------------------------

    async def _send_loop(self) -> None:
        wakeup = self._wakeup
        if wakeup is None:
            raise RuntimeError("the sender runs only after start()")
        while True:
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            if self._client is None:
                try:
                    self._client = await self._connect()
                    self._publishing = asyncio.ensure_future(self._publish_schema(self._client))
                except Exception as error:  # fail what waits; the next emit tries again
                    failure = (
                        error
                        if isinstance(error, ProduceError)
                        else ProduceError(
                            f"cannot connect to Kafka at {self.settings.bootstrap}: {error!r}"
                        )
                    )
                    while self._queue:
                        self._fail(self._queue.popleft(), str(failure))
                    continue
            items = list(self._queue)
            self._queue.clear()
            try:
                await self._send_items(self._client, items)
            except asyncio.CancelledError:
                for item in items:  # stopped mid-way: what was not handed over fails
                    self._fail(item, "the producer was stopped before the event was sent")
                raise
            except Exception as error:  # never let the sender die: report and go on
                for item in items:
                    self._fail(item, self._describe(error, None))

    async def _send_items(self, client: AIOKafkaProducer, items: list[_Item]) -> None:
        """Hand every record of `items` to aiokafka as one record batch per partition (in
        emit order within each partition), bypassing its per-record `send` overhead."""
        topic = self.topic
        try:
            count = len(await client.partitions_for(topic))
        except KafkaError as error:
            for item in items:
                self._fail(item, self._describe(error, item.records[0][0]))
            return
        place = self._partitioner.partition
        placed: dict[bytes, int] = {}  # a run's events come in runs: place each key once
        groups: dict[int, list[tuple[_Item, int, Record]]] = {}
        for item in items:
            for index, record in enumerate(item.records):
                partition = placed.get(record[0])
                if partition is None:
                    partition = placed[record[0]] = place(record[0], count)
                group = groups.get(partition)
                if group is None:
                    group = groups[partition] = []
                group.append((item, index, record))
        for partition, entries in groups.items():
            builder = client.create_batch()
            members: list[_Member] = []
            for item, index, (key, value, timestamp) in entries:
                at = timestamp or None  # 0: now
                headers = item.headers
                if builder.append(key=key, value=value, timestamp=at, headers=headers) is None:
                    await self._submit(client, builder, partition, members)
                    builder = client.create_batch()
                    members = []
                    if builder.append(key=key, value=value, timestamp=at, headers=headers) is None:
                        self._settle(item, index, None, self._too_large(key, value))
                        continue
                members.append((item, index))
            await self._submit(client, builder, partition, members)

    async def _submit(
        self, client: AIOKafkaProducer, builder: Any, partition: int, members: list[_Member]
    ) -> None:
        if not members:
            return
        try:
            ack = await client.send_batch(builder, self.topic, partition=partition)
        except KafkaError as error:
            key = members[0][0].records[members[0][1]][0]
            for item, index in members:
                self._settle(item, index, None, self._describe(error, key))
        else:
            ack.add_done_callback(partial(self._on_batch_ack, members, partition))

    def _too_large(self, key: bytes, value: bytes | None) -> str:
        size = len(key) + len(value or b"")
        return (
            f"an event of run {key.decode(errors='replace')} is {size} bytes, more than one "
            f"record batch holds ({self.config['max_batch_size']} bytes): raise "
            "max_batch_size (and the topic's max.message.bytes)"
        )

    def _on_batch_ack(
        self, members: list[_Member], partition: int, ack: asyncio.Future[Any]
    ) -> None:
        if ack.cancelled() or ack.exception() is not None:
            error = ack.exception() if not ack.cancelled() else None
            key = members[0][0].records[members[0][1]][0]
            reason = (
                self._describe(error, key)
                if error is not None
                else "the send was cancelled (the producer is stopping)"
            )
            for item, index in members:
                self._settle(item, index, None, reason)
            return
        base = ack.result().offset
        topic = self.topic
        settled = 0
        for offset, (item, index) in enumerate(members, start=base):  # `_settle`, inline
            if item.settled[index]:
                continue
            item.settled[index] = 1
            settled += 1
            item.pending -= 1
            future = item.future
            if future.done():  # failed already (a batch), or cancelled by its caller
                continue
            if item.deliveries is None:
                future.set_result(Delivery(topic, partition, offset))
            else:
                item.deliveries[index] = Delivery(topic, partition, offset)
                if item.pending == 0:
                    future.set_result(item.deliveries)
        self._outstanding -= settled
        if self._outstanding == 0 and self._idle is not None:
            self._idle.set()

    async def _publish_schema(self, client: AIOKafkaProducer) -> None:
        """Write the writer schema to `<topic>.schemas` once connected, beside the first
        events (never before them in the queue), if that topic exists."""
        schema = Publication(self.topic)
        try:
            metadata = await client.client.fetch_all_metadata()
            if schema.topic not in metadata.topics():
                schema.missing(self.settings.bootstrap)
                return
            await client.send_and_wait(schema.topic, schema.value, schema.key)
        except KafkaError as error:
            schema.failed(repr(error))

    async def _connect(self) -> AIOKafkaProducer:
        """An aiokafka producer connected to the cluster, retried until the delivery
        timeout so a broker that is starting up is waited for."""
        deadline = time.monotonic() + self.delivery_timeout
        last: Exception | None = None
        for attempt in range(1_000_000):
            client = AIOKafkaProducer(**self.config, partitioner=self._partitioner)
            try:
                await client.start()
                return client
            except KafkaError as error:
                last = error
                await client.stop()
            except BaseException:
                await client.stop()
                raise
            pause = _RETRY_BACKOFF[min(attempt, len(_RETRY_BACKOFF) - 1)]
            if time.monotonic() + pause >= deadline:
                break
            await asyncio.sleep(pause)
        raise ProduceError(
            f"no Kafka broker answered at {self.settings.bootstrap} within "
            f"{self.delivery_timeout:g}s ({last}): is a broker running there? Start one with "
            "`behest broker start` or set BEHEST_BOOTSTRAP_SERVERS"
        )

    def _settle(
        self, item: _Item, index: int, delivery: Delivery | None, error: str | None
    ) -> None:
        """Record one record's outcome; resolve the caller's future once all are in."""
        if item.settled[index]:
            return
        item.settled[index] = 1
        self._outstanding -= 1
        if self._outstanding == 0 and self._idle is not None:
            self._idle.set()
        item.pending -= 1
        future = item.future
        if item.deliveries is None:  # a single event
            if not future.done():
                if error is None:
                    future.set_result(delivery)
                else:
                    future.set_exception(ProduceError(error))
            return
        if error is None:
            item.deliveries[index] = delivery
        elif not future.done():
            future.set_exception(
                ProduceError(f"not every event of the batch was delivered: {error}")
            )
        if item.pending == 0 and not future.done():
            future.set_result(item.deliveries)

    def _fail(self, item: _Item, reason: str) -> None:
        """Fail every record of an item that has no outcome yet."""
        for index in range(len(item.records)):
            self._settle(item, index, None, reason)

    def _describe(self, error: BaseException, key: bytes | None) -> str:
        return describe_aiokafka_error(
            error,
            topic=self.topic,
            bootstrap=self.settings.bootstrap,
            key=key,
            timeout_s=self.delivery_timeout,
        )
