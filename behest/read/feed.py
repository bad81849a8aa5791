"""The runs feed's source: which runs changed, read from the topic itself.

The store has no order of changes to ask (its runs are kept by id and creation time), but
the log has: every record names its run in its key. `ChangeLog` reads the topic's records
(keys and offsets only matter) from where the store's partitions stand, with a consumer of
its own outside any group, and hands out a run once the store's offset for its partition
has passed its record: by then the store holds the state after it, or no state at all if
a tombstone deleted it. So every change of every run is reported, once it can be read.

Memory stays bounded: runs waiting for the projector to fold them are at most
`MAX_WAITING`; beyond, the reader stops reading the log until the projector catches up
(librdkafka's own read-ahead is capped small too).

A reader opened without settings (no topic to read: `RunStateQuery(store)`) compares
instead, each turn, the heads of the active runs and of the `RECENT` newest with what it
reported last (`Recent`): a run neither active nor recent is not reported there.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from confluent_kafka import Consumer, TopicPartition

from behest.config import Settings
from behest.projections.run_state import INDEX_ACTIVE, INDEX_ALL
from behest.read.reader import ProjectionReader, StoreReader

__all__ = ["MAX_WAITING", "RECENT", "ChangeLog", "Recent", "RunDeleted", "RunsFeed"]

MAX_WAITING: Final = 100_000
"""Runs read from the log and not folded yet, at most; then reading pauses."""

RECENT: Final = 1000
"""Without settings, the feed follows the active runs and this many of the newest."""

_BATCH: Final = 5_000


@dataclass(frozen=True, slots=True)
class RunDeleted:
    """What the runs feed reports for a run a tombstone deleted."""

    run_id: uuid.UUID

    def json(self) -> bytes:
        return orjson.dumps({"run_id": str(self.run_id), "deleted": True})


Change = bytes | RunDeleted
"""A run's new state (its JSON), or its deletion."""


class RunsFeed:
    """What changed since the last turn, from the topic when the reader knows it."""

    def __init__(self, reader: ProjectionReader[Any]) -> None:
        self.store = reader.store
        topic = reader.topic
        self.source: ChangeLog | Recent = (
            Recent(self.store)
            if reader.settings is None
            else ChangeLog(reader.settings, topic, lambda: self.store.stored_offsets(topic))
        )

    def changes(self) -> list[Change]:
        if isinstance(self.source, Recent):
            return self.source.changes()
        due = self.source.due()
        states = self.store.get_states([run for run, _ in due])
        found: list[Change] = []
        for (run, tombstone), state in zip(due, states, strict=True):
            if state is not None:
                found.append(state)
            elif tombstone:
                found.append(RunDeleted(uuid.UUID(bytes=run)))
            # else: its records were all dead-lettered, nothing to report
        return found

    def close(self) -> None:
        if isinstance(self.source, ChangeLog):
            self.source.close()


class Recent:
    """Without a topic to read: the active and the newest runs, compared turn by turn."""

    def __init__(self, store: StoreReader) -> None:
        self.store = store
        runs = self._followed()
        heads = store.get_heads(runs)
        self.known = {r: h.last for r, h in zip(runs, heads, strict=True) if h}

    def _followed(self) -> list[bytes]:
        runs = {key[-16:] for key in self.store.scan_index(INDEX_ACTIVE)}
        newest = itertools.islice(self.store.scan_index(INDEX_ALL, reverse=True), RECENT)
        runs.update(key[-16:] for key in newest)
        return sorted(runs)

    def changes(self) -> list[Change]:
        known = self.known
        followed = set(self._followed())
        runs = sorted(followed | set(known))
        heads = self.store.get_heads(runs)
        changed = [r for r, h in zip(runs, heads, strict=True) if h and known.get(r) != h.last]
        gone = [r for r, h in zip(runs, heads, strict=True) if h is None and r in known]
        self.known = {
            r: h.last for r, h in zip(runs, heads, strict=True) if h is not None and r in followed
        }
        found: list[Change] = [s for s in self.store.get_states(changed) if s is not None]
        return found + [RunDeleted(uuid.UUID(bytes=r)) for r in gone]


class ChangeLog:
    """The runs whose records the projector has folded since the last `due()`."""

    def __init__(
        self, settings: Settings, topic: str, stored: Callable[[], dict[int, int]]
    ) -> None:
        self.topic = topic
        self.stored = stored
        """The store's next offset per partition (those it has are the ones followed)."""
        self._consumer = Consumer(
            settings.librdkafka(
                **{
                    "group.id": f"behest-runs-feed-{uuid.uuid4()}",  # assigned, never joins
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": False,
                    "queued.max.messages.kbytes": 4096,
                    "client.id": "behest-runs-feed",
                }
            )
        )
        self._assigned: set[int] = set()
        self._waiting: dict[bytes, tuple[int, int, bool]] = {}  # run -> partition, offset, deleted
        self._follow(stored(), start=True)

    def _follow(self, offsets: dict[int, int], *, start: bool = False) -> None:
        """Read the partitions the store has that are not read yet: from where the store
        stands at the start; one whose store appeared since, from its beginning (all of
        its runs are news here)."""
        new = [
            TopicPartition(self.topic, p, o if start else 0)
            for p, o in offsets.items()
            if p not in self._assigned
        ]
        if new:
            self._consumer.incremental_assign(new)
            self._assigned.update(p.partition for p in new)

    def due(self) -> list[tuple[bytes, bool]]:
        """The runs (16-byte keys) whose records the store has folded by now, each with
        whether a tombstone was among them (a run with no state then was deleted)."""
        self._read()
        offsets = self.stored()
        self._follow(offsets)
        due: list[tuple[bytes, bool]] = []
        for run, (partition, offset, tombstone) in list(self._waiting.items()):
            if offsets.get(partition, 0) > offset:
                del self._waiting[run]
                due.append((run, tombstone))
        return due

    def _read(self) -> None:
        waiting = self._waiting
        while (room := min(_BATCH, MAX_WAITING - len(waiting))) > 0:
            records = self._consumer.consume(num_messages=room, timeout=0)
            for record in records:
                if record.error() is not None:
                    continue  # librdkafka retries on its own; the next look reads on
                run = _run_of(record.key())
                if run is not None:
                    before = waiting.get(run)
                    tombstone = record.value() is None or (before is not None and before[2])
                    waiting[run] = (record.partition() or 0, record.offset() or 0, tombstone)
            if len(records) < room:
                return

    def close(self) -> None:
        self._consumer.close()


def _run_of(key: Any) -> bytes | None:
    """The 16 bytes of a record key that is a run id (as producers write it), else None."""
    if not isinstance(key, bytes):
        return None
    try:
        return uuid.UUID(key.decode("ascii")).bytes
    except ValueError:  # UnicodeDecodeError is one
        return None
