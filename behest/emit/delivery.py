"""Where Kafka stored an event: the position a producer hands back and readers wait for.

Its own module so the recorder, both producers, simulate and the query layer share the type
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Delivery"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where Kafka stored an event: a read-your-writes position for the query layer."""

    topic: str
    partition: int
    offset: int
