"""Delivery tracking of one `EventProducer.emit_many` call: every event's position,
resolved into one future when the last report is in (not a future per event).

librdkafka calls `on_delivery` once per event, from whichever thread polls; the count is
an `itertools.count`, whose `next()` is atomic, so two polling threads cannot both finish.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from concurrent.futures import Future

from confluent_kafka import KafkaError, Message

from behest.emit.delivery import Delivery
from behest.errors import ProduceError

__all__ = ["BatchDelivery"]

log = logging.getLogger("behest.emit.producer")


class BatchDelivery:
    """The deliveries of one `emit_many` call, resolved into one future when all are in."""

    __slots__ = ("describe", "done", "failure", "future", "positions", "topic", "total")

    def __init__(
        self, topic: str, total: int, describe: Callable[[KafkaError, bytes | None], str]
    ) -> None:
        self.topic = topic
        self.total = total
        self.describe = describe
        self.future: Future[list[Delivery]] = Future()
        self.future.set_running_or_notify_cancel()
        self.positions: list[tuple[int, int] | None] = [None] * total
        self.failure: str | None = None
        self.done = itertools.count(1)  # next() is atomic: reports may come from two threads

    def on_delivery(self, index: int, error: KafkaError | None, msg: Message) -> None:
        """Delivery report of the `index`-th event (a librdkafka callback: must not raise)."""
        if error is None:
            self.positions[index] = (msg.partition(), msg.offset())  # type: ignore[assignment]
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
        if self.failure is not None:
            failed = self.positions.count(None)
            reason = f"{failed} of {self.total} events were not delivered: {self.failure}"
            log.warning("%s", reason)  # also seen if nobody checks the future
            self.future.set_exception(ProduceError(reason))
            return
        topic = self.topic
        self.future.set_result(
            [Delivery(topic, p, o) for p, o in self.positions]  # type: ignore[misc]
        )
