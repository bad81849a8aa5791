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
from behest.emit.batch import positions
from behest.emit.delivery import Delivery
from behest.emit.failures import describe_aiokafka_error
from behest.emit.partitioner import JavaPartitioner
from behest.emit.recorder import AsyncRunRecorder
from behest.emit.records import DEFAULT_MAX_BYTES, KeyedEncoder, Record, check_event, check_sizes
from behest.emit.schemas import Publication
from behest.errors import ProduceError
from behest.events import AgentEvent
from behest.registry import registry_encoder
from behest.telemetry import trace_headers

__all__ = ["AsyncEventProducer", "JavaPartitioner", "aiokafka_config"]

log = logging.getLogger("behest.emit.aio")

_RETRY_BACKOFF: Final = (0.1, 0.25, 0.5, 1.0)
_Headers = list[tuple[str, str | bytes | None]]
_NO_HEADERS: Final[_Headers] = []  # shared, never changed


class _Item:
    """Records waiting for the sender task: those of one `emit_many` call (one `future`,
    `deliveries` in the events' order), or of consecutive `emit` calls (`futures`, one
    per record: an event's position in the item is its token, so a single event costs its
    future and its record, no object of its own)."""

    __slots__ = (
        "deliveries",
        "failure",
        "future",
        "futures",
        "headers",
        "pending",
        "records",
        "settled",
    )

    def __init__(
        self,
        records: list[Record],
        future: asyncio.Future[Any] | None,
        headers: _Headers,
    ) -> None:
        count = len(records)
        self.records = records
        self.future = future
        self.headers = headers  # the emitting caller's trace context
        many = future is not None
        self.futures: list[asyncio.Future[Any]] | None = None if many else []
        self.deliveries: list[Delivery | None] | None = [None] * count if many else None
        self.pending = count
        self.settled = bytearray(count)
        self.failure: str | None = None  # a batch's first failure

    def finish(self) -> None:
        """Every record of a batch has its outcome: resolve its future."""
        future = self.future
        if future is None or future.done():  # (cancelled by its caller)
            return
        if self.failure is None:
            future.set_result(self.deliveries)
            return
        failed = tuple(i for i, delivery in enumerate(self.deliveries or ()) if delivery is None)
        future.set_exception(
            ProduceError(
                f"{len(failed)} of {len(self.records)} events were not delivered (positions "
                f"{positions(failed)} in the batch): {self.failure}",
                failed,
            )
        )


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
        self.max_bytes = int(self.config.get("max_request_size", DEFAULT_MAX_BYTES))
        """The largest event (key + value) `emit` sends; a larger one raises `ProduceError`."""
        self._encode = KeyedEncoder(registry_encoder(self.settings, self.topic))
        self._queue: deque[_Item] = deque()
        self._client: AIOKafkaProducer | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()  # (bound to a loop on first wait, not here)
        self._idle = asyncio.Event()
        self._idle.set()
        self._open: _Item | None = None
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
        self._sender = self._loop.create_task(self._send_loop(), name="behest-aio-sender")

    async def flush(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 - as sync
        """Wait until every queued event is acknowledged or failed (or `timeout` seconds);
        returns how many are still waiting (0: all done)."""
        if self._sender is None:
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
        for item in self._take():
            self._fail(
                item, "an event was dropped: the producer was stopped before Kafka acknowledged it"
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
        if len(record[0]) + len(record[1]) > self.max_bytes:  # type: ignore[arg-type]
            check_sizes([record], self.max_bytes)
        return self._enqueue_one(record)

    def emit_many(self, events: Iterable[AgentEvent]) -> asyncio.Future[list[Delivery]]:
        """Queue several events at once (in order); one future for all their deliveries.

        Every event is encoded before any is queued, so a bad one raises and sends nothing.
        """
        encode = self._encode
        records: list[Record] = [
            encode(event if isinstance(event, AgentEvent) else check_event(event))
            for event in events
        ]
        check_sizes(records, self.max_bytes)
        loop = self._ready()
        future: asyncio.Future[list[Delivery]] = loop.create_future()
        if not records:
            future.set_result([])
            return future
        self._open = None  # singles emitted after this batch go after it
        self._queue.append(_Item(records, future, trace_headers() or _NO_HEADERS))
        self._queued(len(records))
        return future

    def emit_tombstone(self, run_id: uuid.UUID | str) -> asyncio.Future[Delivery]:
        """Queue a record with the run's key and no value: every projection deletes the run."""
        return self._enqueue_one((self._encode.key(run_id), None, 0))

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

    def _enqueue_one(self, record: Record) -> asyncio.Future[Delivery]:
        """Queue one record on the open item of single events (a new one when a batch or a
        different trace context came in between). The hot path of `emit`: `_ready` and
        `_queued` inline."""
        loop = self._loop
        if loop is None or self._closing:
            loop = self._ready()  # raises
        future: asyncio.Future[Delivery] = loop.create_future()
        headers = trace_headers() or _NO_HEADERS
        item = self._open
        if item is None or item.headers is not headers:
            item = self._open = _Item([], None, headers)
            self._queue.append(item)
            self._wakeup.set()  # (an open item is queued: the sender knows of it)
        item.records.append(record)
        item.futures.append(future)  # type: ignore[union-attr]
        item.settled.append(0)
        item.pending += 1
        if self._outstanding == 0:
            self._idle.clear()
        self._outstanding += 1
        return future

    def _ready(self) -> asyncio.AbstractEventLoop:
        """The producer's loop, or a `ProduceError` if it is not started or closed."""
        if self._closed or self._closing:
            raise ProduceError("the producer is closed; create a new AsyncEventProducer")
        if self._loop is None:
            raise ProduceError(
                "the producer is not started: use `async with AsyncEventProducer(...)` "
                "or `await producer.start()` first"
            )
        return self._loop

    def _queued(self, count: int) -> None:
        if self._outstanding == 0:
            self._idle.clear()
        self._outstanding += count
        self._wakeup.set()

    def _take(self) -> list[_Item]:
        """Everything queued, in emit order; later singles open a new item."""
        items = list(self._queue)
        self._queue.clear()
        self._open = None
        return items

    # --- the sender task -------------------------------------------------------------------

    async def _send_loop(self) -> None:
        wakeup = self._wakeup
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
                    for item in self._take():
                        self._fail(item, str(failure))
                    continue
            items = self._take()
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
        emit order within each partition), bypassing its per-record `send` overhead.

        A record is known by its item and its index there, kept in two parallel lists per
        partition (its owners and its indexes): no object per record while it waits."""
        topic = self.topic
        try:
            count = len(await client.partitions_for(topic))
        except KafkaError as error:
            for item in items:
                self._fail(item, self._describe(error, item.records[0][0]))
            return
        place = self._partitioner.partition
        placed: dict[bytes, int] = {}  # a run's events come in runs: place each key once
        groups: dict[int, tuple[list[_Item], list[int]]] = {}
        for item in items:
            for index, record in enumerate(item.records):
                partition = placed.get(record[0])
                if partition is None:
                    partition = placed[record[0]] = place(record[0], count)
                group = groups.get(partition)
                if group is None:
                    group = groups[partition] = ([], [])
                group[0].append(item)
                group[1].append(index)
        for partition, (owners, indexes) in groups.items():
            builder = client.create_batch()
            start = 0  # the first record of the batch being built
            for at, (item, index) in enumerate(zip(owners, indexes, strict=True)):
                key, value, timestamp = item.records[index]
                stamp = timestamp or None  # 0: now
                headers = item.headers
                if builder.append(key=key, value=value, timestamp=stamp, headers=headers) is None:
                    await self._submit(client, builder, partition, owners, indexes, start, at)
                    builder = client.create_batch()
                    start = at
                    if (
                        builder.append(key=key, value=value, timestamp=stamp, headers=headers)
                        is None
                    ):
                        self._settle(item, index, None, self._too_large(key, value))
                        start = at + 1
            await self._submit(client, builder, partition, owners, indexes, start, len(owners))

    async def _submit(
        self,
        client: AIOKafkaProducer,
        builder: Any,
        partition: int,
        owners: list[_Item],
        indexes: list[int],
        start: int,
        stop: int,
    ) -> None:
        """Send the record batch holding records `start:stop` of a partition's lists."""
        if start >= stop:
            return
        owners, indexes = owners[start:stop], indexes[start:stop]
        try:
            ack = await client.send_batch(builder, self.topic, partition=partition)
        except KafkaError as error:
            reason = self._describe(error, owners[0].records[indexes[0]][0])
            for item, index in zip(owners, indexes, strict=True):
                self._settle(item, index, None, reason)
        else:
            ack.add_done_callback(partial(self._on_batch_ack, owners, indexes, partition))

    def _too_large(self, key: bytes, value: bytes | None) -> str:
        size = len(key) + len(value or b"")
        return (
            f"an event of run {key.decode(errors='replace')} is {size} bytes, more than one "
            f"record batch holds ({self.config['max_batch_size']} bytes): raise "
            "max_batch_size (and the topic's max.message.bytes)"
        )

    def _on_batch_ack(
        self, owners: list[_Item], indexes: list[int], partition: int, ack: asyncio.Future[Any]
    ) -> None:
        if ack.cancelled() or ack.exception() is not None:
            error = ack.exception() if not ack.cancelled() else None
            reason = (
                self._describe(error, owners[0].records[indexes[0]][0])
                if error is not None
                else "the send was cancelled (the producer is stopping)"
            )
            for item, index in zip(owners, indexes, strict=True):
                self._settle(item, index, None, reason)
            return
        offset = ack.result().offset
        topic = self.topic
        settled = 0
        for item, index in zip(owners, indexes, strict=True):  # `_settle`, inline
            at = offset
            offset += 1
            if item.settled[index]:
                continue
            item.settled[index] = 1
            settled += 1
            item.pending -= 1
            futures = item.futures
            if futures is not None:  # a single event
                future = futures[index]
                if not future.done():  # (cancelled by its caller)
                    future.set_result(Delivery(topic, partition, at))
                continue
            item.deliveries[index] = Delivery(topic, partition, at)  # type: ignore[index]
            if item.pending == 0:
                item.finish()
        self._outstanding -= settled
        if self._outstanding == 0:
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
        if self._outstanding == 0:
            self._idle.set()
        item.pending -= 1
        if item.futures is not None:  # a single event
            single = item.futures[index]
            if not single.done():
                if error is None:
                    single.set_result(delivery)
                else:
                    single.set_exception(ProduceError(error))
            return
        if error is None:
            item.deliveries[index] = delivery  # type: ignore[index]
        elif item.failure is None:
            item.failure = error
        if item.pending == 0:
            item.finish()

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
