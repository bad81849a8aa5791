"""`BatchDelivery`, one `emit_many` call's delivery tracking: each report lands on its own
event (found by its bytes), in whatever order librdkafka reports them; a failure names the
positions that failed."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import given
from hypothesis import strategies as st

from behest.emit.batch import BatchDelivery, positions
from behest.emit.delivery import Delivery, deliveries
from behest.emit.records import Record
from behest.errors import ProduceError

KEY = b"0b6a8f47-3f8e-4a8e-9b6f-1c8a2f2d5e11"


def describe(error: KafkaError, key: bytes | None) -> str:
    return f"{error.str()} ({key!r})"


def batch_of(values: list[bytes]) -> tuple[BatchDelivery, list[Record]]:
    records: list[Record] = [(KEY, value, 0) for value in values]
    return BatchDelivery("events", records, describe), records


def report(batch: BatchDelivery, index: int, value: bytes, at: tuple[int, int]) -> None:
    """librdkafka's part: deliver the report of the `index`-th event through its callback."""
    callback = list(batch.callbacks())[index]
    callback(None, Message(topic="events", partition=at[0], offset=at[1], key=KEY, value=value))


@given(st.permutations(range(12)))
def test_reports_in_any_order_land_on_their_own_events(order: list[int]) -> None:
    values = [f"event {i}".encode() for i in range(12)]
    batch, _ = batch_of(values)
    for index in order:
        assert not batch.future.done()
        report(batch, index, values[index], (index % 3, 100 + index))
    assert batch.future.result(timeout=0) == [Delivery("events", i % 3, 100 + i) for i in range(12)]


def test_a_batch_holding_an_event_twice_tracks_each_by_its_position() -> None:
    batch, _ = batch_of([b"same", b"other", b"same"])
    assert batch.index_of is None  # bytes cannot tell the two apart: a callback each
    for index, value in reversed(list(enumerate([b"same", b"other", b"same"]))):
        report(batch, index, value, (0, index))
    assert [d.offset for d in batch.future.result(timeout=0)] == [0, 1, 2]


def test_a_failure_names_the_positions_that_failed() -> None:
    values = [f"event {i}".encode() for i in range(5)]
    batch, _ = batch_of(values)
    failed = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
    for index, value in enumerate(values):
        if index in (1, 3):
            callback = list(batch.callbacks())[index]
            callback(failed, Message(topic="events", key=KEY, value=value))
        else:
            report(batch, index, value, (2, index))
    with pytest.raises(ProduceError, match=r"2 of 5 events .*positions 1, 3 in the batch"):
        batch.future.result(timeout=0)
    error = batch.future.exception(timeout=0)
    assert isinstance(error, ProduceError) and error.failed == (1, 3)


def test_positions_are_shortened_past_ten() -> None:
    assert positions((0, 3, 4)) == "0, 3, 4"
    assert positions(tuple(range(12))) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … (2 more)"


def test_deliveries_are_the_frozen_dataclass_built_the_fast_way() -> None:
    made = deliveries("events", [0, 1], [7, 8])
    assert made == [Delivery("events", 0, 7), Delivery("events", 1, 8)]
    assert hash(made[0]) == hash(Delivery("events", 0, 7))
    with pytest.raises(AttributeError):
        made[0].offset = 9  # type: ignore[misc]
