"""The future `EventProducer.emit` returns: a `concurrent.futures.Future` that is also its
own delivery callback, and makes its lock and lists only when someone waits on it.

A plain `Future` is born with a Condition, an RLock, a deque, two lists and five bound
methods, and `emit` added a `partial` as the callback: a dozen objects per event in
flight, which the garbage collector scanned again and again (a third of `emit`'s CPU with
100k events in flight). This one is a single object until a thread waits on it or adds a
callback; `result()`, `exception()` and `done()` of a finished one take no lock at all.

It relies on `Future`'s private attributes (`_condition`, `_state`, ...), unchanged since
Python 3.8; `LAZY` is False, and `emit` uses a plain `Future`, should they ever change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Final

from confluent_kafka import KafkaError, Message

from behest.emit.delivery import Delivery
from behest.errors import ProduceError

__all__ = ["LAZY", "PendingDelivery"]

_RUNNING: Final = "RUNNING"
_FINISHED: Final = "FINISHED"
_DONE: Final = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED})

LAZY: Final = sorted(Future().__dict__) == [
    "_condition",
    "_done_callbacks",
    "_exception",
    "_result",
    "_state",
    "_waiters",
] and (Future().__dict__["_state"], Future.__module__) == ("PENDING", "concurrent.futures._base")
"""`Future` is laid out as this class expects."""

_LOG = logging.getLogger("concurrent.futures")  # where Future logs what a callback raises
log = logging.getLogger("behest.emit.producer")
_CREATING = threading.Lock()
"""Held while a condition is made, and while a result is set without one: a thread that
starts waiting either makes the condition first (and the result is set under it, with a
notification) or finds the result already set."""


class PendingDelivery(Future[Delivery]):
    """A running `Future[Delivery]`, called by librdkafka with the delivery report.

    The report is turned into the outcome here, in one call: `describe` (the producer's)
    is only needed when the event was not delivered.
    """

    # Slots, not __dict__: reading `__dict__` would make a dict object per future.
    __slots__ = ("_describe", "_lazy_callbacks", "_lazy_condition", "_lazy_waiters", "_topic")

    def __init__(self, topic: str, describe: Callable[[KafkaError, bytes | None], str]) -> None:
        # Not Future.__init__: its condition and lists come on first use (below).
        self._state = _RUNNING
        self._result = None
        self._exception = None
        self._topic = topic
        self._describe = describe
        self._lazy_condition: threading.Condition | None = None

    def __call__(self, error: KafkaError | None, msg: Message) -> None:
        if error is None:
            delivery = Delivery(self._topic, msg.partition(), msg.offset())  # type: ignore[arg-type]
            with _CREATING:  # `set_result`, inline: the path of every delivered event
                if self._lazy_condition is None and self._state == _RUNNING:
                    self._result = delivery
                    self._state = _FINISHED
                    return
            self.set_result(delivery)
            return
        reason = self._describe(error, msg.key())
        log.warning("event not delivered: %s", reason)  # also seen if nobody checks
        self.set_exception(ProduceError(reason))

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        condition = self._lazy_condition
        if condition is None:
            with _CREATING:
                condition = self._lazy_condition
                if condition is None:  # the lists first: a condition promises them
                    self._lazy_waiters: list[Any] = []
                    self._lazy_callbacks: list[Any] = []
                    condition = self._lazy_condition = threading.Condition()
        return condition

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        _ = self._condition  # made with it
        return self._lazy_waiters

    @property
    def _done_callbacks(self) -> list[Any]:
        _ = self._condition
        return self._lazy_callbacks

    def set_result(self, result: Delivery) -> None:
        with _CREATING:
            lazy = self._lazy_condition is None  # nobody waits, nothing to call
            if lazy and self._state == _RUNNING:
                self._result = result
                self._state = _FINISHED
                return
        if lazy:  # (outside the lock: repr() makes the condition)
            raise InvalidStateError(f"{self._state}: {self!r}")
        super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        with _CREATING:
            lazy = self._lazy_condition is None
            if lazy and self._state == _RUNNING:
                self._exception = exception
                self._state = _FINISHED
                return
        if lazy:
            raise InvalidStateError(f"{self._state}: {self!r}")
        super().set_exception(exception)

    def done(self) -> bool:
        return self._state in _DONE

    def result(self, timeout: float | None = None) -> Delivery:
        if self._state == _FINISHED:  # final: read without the lock
            if self._exception is not None:
                raise self._exception
            return self._result  # type: ignore[return-value]
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == _FINISHED:
            return self._exception
        return super().exception(timeout)

    def add_done_callback(self, fn: Callable[[Future[Delivery]], object]) -> None:
        if self._state != _FINISHED:
            super().add_done_callback(fn)
            return
        try:  # finished: call it now, as Future does
            fn(self)
        except Exception:
            _LOG.exception("exception calling callback for %r", self)
