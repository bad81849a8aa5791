"""`PendingDelivery`, the future `EventProducer.emit` returns: a `Future` in every way a
caller can tell, though it makes its lock only when someone waits."""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, as_completed, wait
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from behest.emit.delivery import Delivery
from behest.emit.pending import LAZY, PendingDelivery
from behest.errors import ProduceError

AT = Delivery("events", 2, 41)
REPORT = Message(topic="events", partition=2, offset=41, key=b"run-1", value=b"event")
"""librdkafka's delivery report of the event stored at `AT`."""


def describe(error: KafkaError, key: Any) -> str:
    """The producer's part: a failed report's message."""
    return f"{key!r}: {error.str()}"


def new_future() -> PendingDelivery:
    return PendingDelivery("events", describe)


def test_this_python_lays_out_future_as_expected() -> None:
    assert LAZY


def test_it_is_its_own_delivery_callback() -> None:
    future = new_future()
    assert isinstance(future, Future)
    assert future.running() and not future.done()
    future(None, REPORT)
    assert future.done() and future.result(timeout=0) == AT and future.exception() is None
    assert not future.cancel()


def test_a_failure_raises_from_result() -> None:
    future = new_future()
    future(KafkaError(KafkaError._MSG_TIMED_OUT, "broker down"), REPORT)
    with pytest.raises(ProduceError, match="b'run-1': broker down"):
        future.result(timeout=0)
    assert isinstance(future.exception(), ProduceError)


def test_a_second_outcome_is_refused() -> None:
    future = new_future()
    future.set_result(AT)
    with pytest.raises(InvalidStateError):
        future.set_result(AT)
    waited = new_future()
    assert not wait([waited], timeout=0).done  # makes the condition: the locked path
    waited.set_result(AT)
    with pytest.raises(InvalidStateError):
        waited.set_exception(ProduceError("late"))


def test_callbacks_run_once_whether_added_before_or_after() -> None:
    calls: list[str] = []
    future = new_future()
    future.add_done_callback(lambda f: calls.append(f"before {f.result()}"))
    future.set_result(AT)
    future.add_done_callback(lambda f: calls.append(f"after {f.result()}"))
    assert calls == [f"before {AT}", f"after {AT}"]


def test_wait_and_as_completed_see_it_finish() -> None:
    futures = [new_future() for _ in range(3)]
    threading.Timer(0.05, futures[1].set_result, [AT]).start()
    done, pending = wait(futures, timeout=5, return_when=FIRST_COMPLETED)
    assert done == {futures[1]} and len(pending) == 2
    for future in futures[::2]:
        future.set_result(AT)
    assert set(as_completed(futures, timeout=5)) == set(futures)


def test_a_waiter_is_woken_however_the_result_races_it() -> None:
    """Waiters start before, during and after the result is set; none may miss it."""
    for round_ in range(300):
        future = new_future()
        results: list[Delivery] = []

        def waiter(future: PendingDelivery = future, results: list[Delivery] = results) -> None:
            results.append(future.result(timeout=10))

        waiters = [threading.Thread(target=waiter) for _ in range(2)]
        setter = (  # the delivery report itself, or set_result
            threading.Thread(target=future, args=(None, REPORT))
            if round_ % 4 < 2
            else threading.Thread(target=future.set_result, args=(AT,))
        )
        order = [*waiters, setter] if round_ % 2 else [setter, *waiters]
        for thread in order:
            thread.start()
        for thread in order:
            thread.join(timeout=15)
        assert results == [AT, AT], f"round {round_}"
