"""Where Kafka stored an event: the position a producer hands back and readers wait for.

Its own module so the recorder, both producers, simulate and the query layer share the type
without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Delivery", "deliveries"]


@dataclass(frozen=True, slots=True, init=False)
class Delivery:
    """Where Kafka stored an event: a read-your-writes position for the query layer."""

    topic: str
    partition: int
    offset: int

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        # A producer makes one per event: its slots are set through their descriptors, a
        # third of the cost of the frozen dataclass's generated `object.__setattr__` calls.
        _set_topic(self, topic)
        _set_partition(self, partition)
        _set_offset(self, offset)


_SLOTS: Any = vars(Delivery)
_set_topic = _SLOTS["topic"].__set__
_set_partition = _SLOTS["partition"].__set__
_set_offset = _SLOTS["offset"].__set__
_new = object.__new__


def deliveries(topic: str, partitions: Iterable[int], offsets: Iterable[int]) -> list[Delivery]:
    """`[Delivery(topic, p, o) for p, o in zip(partitions, offsets)]` without an `__init__`
    call each: how a batch's deliveries are made."""
    made: list[Delivery] = []
    add = made.append
    for partition, offset in zip(partitions, offsets, strict=True):
        delivery = _new(Delivery)
        _set_topic(delivery, topic)
        _set_partition(delivery, partition)
        _set_offset(delivery, offset)
        add(delivery)
    return made
