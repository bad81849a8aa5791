"""Event → Kafka record (key, value, timestamp): the step both producers share.

The key is the run id's canonical text, so a run's events stay in one partition and in
order whoever produced them; the record's timestamp is the event's own time, so the log's
time index (e.g. `offsets_for_times`) finds events by when they happened, even replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from operator import itemgetter
from typing import Final

from behest import codec
from behest.errors import CodecError, ProduceError
from behest.events import PAYLOAD_TYPES, AgentEvent
from behest.times import EPOCH

__all__ = ["DEFAULT_MAX_BYTES", "KeyedEncoder", "Record", "check_event", "check_sizes"]

DEFAULT_MAX_BYTES: Final = 1_000_000
"""The largest record (key + value) both producers send unless `message.max.bytes` says
otherwise: librdkafka's default, a little under a topic's default `max.message.bytes`."""

_KEY_CACHE_SIZE: Final = 65_536
_VALUE: Final = itemgetter(1)
_MILLISECOND: Final = timedelta(milliseconds=1)

Record = tuple[bytes, bytes | None, int]
"""What goes to Kafka for one event: key, value (None: a tombstone), timestamp in ms since
the epoch (0: the time it is produced)."""


def check_event(event: object) -> AgentEvent:
    """`event` itself if it is an `AgentEvent`, else a `TypeError` that says what to pass."""
    if isinstance(event, AgentEvent):
        return event
    hint = (
        " (a payload: stamp it into an envelope with `producer.run(...).emit(payload)`)"
        if isinstance(event, PAYLOAD_TYPES)
        else ""
    )
    raise TypeError(
        f"emit() takes an AgentEvent, got {type(event).__name__}{hint}; build one with "
        "AgentEvent(run_id=..., sequence=..., payload=...)"
    )


def check_sizes(records: Sequence[Record], limit: int) -> None:
    """A `ProduceError` naming the first record larger than `limit` bytes (key + value), so
    an oversize event is refused before anything of its batch is sent, not by the broker."""
    if not records or max(map(len, map(_VALUE, records))) + len(records[0][0]) <= limit:
        return  # (keys are a run id's text: all the same length)
    for index, (key, value, _) in enumerate(records):
        size = len(key) + len(value or b"")
        if size > limit:
            where = f"event {index} of the batch" if len(records) > 1 else "the event"
            raise ProduceError(
                f"{where} (run {key.decode(errors='replace')}) is {size:,} bytes, more than the "
                f"{limit:,} a Kafka record may have here (message.max.bytes), so nothing was "
                "sent: keep large content out of events (store it elsewhere and emit a "
                "reference), or raise message.max.bytes and the topic's max.message.bytes"
            )


class KeyedEncoder:
    """Event → `Record`, remembering the key and id text of recently seen runs.

    `encode` replaces the single-object encoding (e.g. Confluent framing, from
    `behest.registry`); without it, events take `codec.encode_stamped`, which reuses the
    run's remembered text and computes the event's time once.
    """

    __slots__ = ("_encode", "_runs")

    def __init__(self, encode: Callable[[AgentEvent], bytes] | None = None) -> None:
        self._runs: dict[int, tuple[bytes, str]] = {}  # by the id's int: UUID hashes in Python
        self._encode = encode

    def __call__(self, event: AgentEvent) -> Record:
        run_id = event.run_id
        if type(run_id) is uuid.UUID:
            run = self._runs.get(run_id.int)
            if run is None:
                run = self._remember(run_id)
            if self._encode is None:
                value, micros = codec.encode_stamped(event, run[1])
                return run[0], value, micros // 1000
            key = run[0]
        else:  # model_construct() skipped validation: encoding says what is wrong
            key = self.key(run_id)
        value = (self._encode or codec.encode)(event)
        return key, value, (event.timestamp - EPOCH) // _MILLISECOND

    def key(self, run_id: uuid.UUID | str) -> bytes:
        """The Kafka key of a run (canonical lowercase UUID text), cached."""
        try:
            value = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
        except ValueError:
            raise CodecError(
                f"{run_id!r} is not a run id (a UUID); events made with model_construct() "
                "skip validation: build them with AgentEvent(...)"
            ) from None
        run = self._runs.get(value.int)
        if run is None:
            run = self._remember(value)
        return run[0]

    def _remember(self, run_id: uuid.UUID) -> tuple[bytes, str]:
        if len(self._runs) >= _KEY_CACHE_SIZE:
            self._runs.clear()
        text = str(run_id)
        run = self._runs[run_id.int] = (text.encode(), text)
        return run
