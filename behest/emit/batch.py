"""Delivery tracking of one `EventProducer.emit_many` call: every event's position,
resolved into one future when the last report is in (not a future per event).

librdkafka calls `on_delivery` once per event, from whichever thread polls; the count is
an `itertools.count`, whose `next()` is atomic, so two polling threads cannot both finish.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from functools import partial

from confluent_kafka import KafkaError, Message

from behest.emit.delivery import Delivery, deliveries
from behest.emit.records import Record
from behest.errors import ProduceError

__all__ = ["BatchDelivery", "positions"]

log = logging.getLogger("behest.emit.producer")


class BatchDelivery:
    """The deliveries of one `emit_many` call, resolved into one future when all are in.

    One callback serves the whole batch: it finds the event a report is about by its value
    (every event's bytes differ: each has its own id), so nothing is allocated per event
    while it waits for Kafka. A callable per event (a `partial`) kept 100k events in flight
    as 100k objects for the garbage collector to scan again and again. A batch that holds
    the same event twice takes `callback(index)` per event instead.
    """

    __slots__ = (
        "describe",
        "done",
        "failure",
        "future",
        "index_of",
        "offsets",
        "partitions",
        "topic",
        "total",
    )

    def __init__(
        self,
        topic: str,
        records: Sequence[Record],
        describe: Callable[[KafkaError, bytes | None], str],
    ) -> None:
        self.topic = topic
        self.total = total = len(records)
        self.describe = describe
        self.future: Future[list[Delivery]] = Future()
        self.future.set_running_or_notify_cancel()
        index_of = {record[1]: index for index, record in enumerate(records)}
        self.index_of = index_of if len(index_of) == total else None
        self.partitions = [-1] * total
        self.offsets = [-1] * total
        self.failure: str | None = None
        self.done = itertools.count(1)  # next() is atomic: reports may come from two threads

    def callbacks(self) -> Iterator[Callable[[KafkaError | None, Message], None]]:
        """The delivery callback of each event, in order: one shared object, or (when the
        batch holds an event twice) one per event."""
        if self.index_of is not None:
            return itertools.repeat(self.on_delivery, self.total)  # one bound method for all
        return (partial(self.on_delivery_at, index) for index in range(self.total))

    def on_delivery(self, error: KafkaError | None, msg: Message) -> None:
        """Delivery report of one of the batch's events (a librdkafka callback): the
        common case in one call, the event found by its bytes."""
        if error is not None:
            self.on_delivery_at(self.index_of[msg.value()], error, msg)  # type: ignore[index]
            return
        index = self.index_of[msg.value()]  # type: ignore[index]
        self.partitions[index] = msg.partition()  # type: ignore[assignment]
        self.offsets[index] = msg.offset()  # type: ignore[assignment]
        if next(self.done) == self.total:
            self.finish()

    def on_delivery_at(self, index: int, error: KafkaError | None, msg: Message) -> None:
        """Delivery report of the `index`-th event (a librdkafka callback: must not raise)."""
        if error is None:
            self.partitions[index] = msg.partition()  # type: ignore[assignment]
            self.offsets[index] = msg.offset()  # type: ignore[assignment]
        elif self.failure is None:
            self.failure = self.describe(error, msg.key())
        if next(self.done) == self.total:
            self.finish()

    def fail(self, index: int, reason: str) -> None:
        """The `index`-th event was never queued."""
        if self.failure is None:
            self.failure = reason
        if next(self.done) == self.total:
            self.finish()

    def finish(self) -> None:
        self.index_of = None  # the values are no longer needed
        if self.failure is not None:
            failed = tuple(i for i, partition in enumerate(self.partitions) if partition < 0)
            reason = (
                f"{len(failed)} of {self.total} events were not delivered (positions "
                f"{positions(failed)} in the batch): {self.failure}"
            )
            log.warning("%s", reason)  # also seen if nobody checks the future
            self.future.set_exception(ProduceError(reason, failed))
            return
        self.future.set_result(deliveries(self.topic, self.partitions, self.offsets))


def positions(indexes: tuple[int, ...], shown: int = 10) -> str:
    """`0, 3, 4` or `0, 3, 4, … (12 more)`: the failed positions of a batch, for messages."""
    text = ", ".join(map(str, indexes[:shown]))
    return f"{text}, … ({len(indexes) - shown} more)" if len(indexes) > shown else text
