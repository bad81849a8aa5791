"""The tailer's side of watching, without a broker: a `GenerationWriter` folds records into
partition stores as a projector does, and readers follow it as RocksDB secondaries (as
`behest serve` does beside `behest project`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest

from behest.codec import encode
from behest.emit.partitioner import partition_for
from behest.events import AgentEvent
from behest.fold.generations import GenerationWriter
from behest.fold.layout import Layout
from behest.fold.storeset import StoreSet
from behest.projections import RunStateProjection
from behest.read.feed import RunDeleted, RunsFeed
from behest.read.query import RunStateQuery
from behest.read.reader import ProjectionReader
from behest.testing import sample_run

PARTITIONS = 3
TOPIC = "t"


class _Record:
    """What the writer reads of a Kafka message."""

    def __init__(self, partition: int, offset: int, key: bytes, value: bytes | None) -> None:
        self._p, self._o, self._k, self._v = partition, offset, key, value

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes | None:
        return self._v


class Log:
    """A topic of `PARTITIONS` partitions folded into partition stores as it is appended."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout.of(root / "state", "run_state")
        made = self.layout.create(version=1, topic=TOPIC, partitions=PARTITIONS, run_keyed=True)
        self.writer = GenerationWriter(
            self.layout, made, RunStateProjection(), member="me", snapshot_every=4
        )
        self.writer.add(range(PARTITIONS))
        self.writer.switch()
        self.offsets = dict.fromkeys(range(PARTITIONS), 0)

    def append(self, events: Sequence[AgentEvent]) -> None:
        """Fold `events` in this order, one batch."""
        records = []
        for event in events:
            key = str(event.run_id).encode()
            partition = partition_for(key, PARTITIONS)
            records.append(_Record(partition, self.offsets[partition], key, encode(event)))
            self.offsets[partition] += 1
        self.writer.process(records)

    def delete(self, run_id: uuid.UUID) -> None:
        """A tombstone for the run."""
        key = str(run_id).encode()
        partition = partition_for(key, PARTITIONS)
        self.writer.process([_Record(partition, self.offsets[partition], key, None)])
        self.offsets[partition] += 1

    def reader(self) -> StoreSet:
        return StoreSet.open(self.layout.root.parent, "run_state")


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    made = Log(tmp_path)
    yield made
    made.writer.close()


def _two_runs_apart() -> tuple[list[AgentEvent], list[AgentEvent]]:
    """Two runs on different partitions."""
    first = sample_run(events=12, seed=1)
    part = partition_for(str(first[0].run_id).encode(), PARTITIONS)
    for seed in range(2, 50):
        other = sample_run(events=12, seed=seed)
        if partition_for(str(other[0].run_id).encode(), PARTITIONS) != part:
            return first, other
    raise AssertionError("no second run on another partition")


def test_catch_up_runs_sees_the_writes_of_those_runs_partitions_only(log: Log) -> None:
    a, b = _two_runs_apart()
    log.append(a[:4] + b[:4])
    with log.reader() as reader:
        assert [h and h.last for h in reader.get_heads([a[0].run_id.bytes])] == [3]
        log.append(a[4:8] + b[4:8])
        assert not reader.catch_up_runs([a[0].run_id.bytes])
        heads = reader.get_heads([a[0].run_id.bytes, b[0].run_id.bytes])
        assert [h and h.last for h in heads] == [7, 3]  # b's partition is not caught up
        reader.catch_up()
        heads = reader.get_heads([a[0].run_id.bytes, b[0].run_id.bytes])
        assert [h and h.last for h in heads] == [7, 7]


def test_without_settings_the_runs_feed_compares_recent_runs_and_sees_deletions(
    log: Log,
) -> None:
    a, b = _two_runs_apart()
    log.append(a[:4] + b)
    with log.reader() as store:
        reader = ProjectionReader(store, RunStateProjection(), topic=TOPIC)
        feed = RunsFeed(reader)  # no settings: no topic to read
        assert feed.changes() == []
        log.append(a[4:])
        log.delete(b[0].run_id)
        reader.refresh(force=True)
        changes = feed.changes()
        assert changes[-1] == RunDeleted(b[0].run_id)
        states = [orjson.loads(c) for c in changes if isinstance(c, bytes)]
        assert [(s["run_id"], s["sequence"]) for s in states] == [
            (str(a[0].run_id), a[-1].sequence)
        ]
        assert feed.changes() == []


def test_late_events_in_several_gaps_reach_each_watcher_that_lacks_them_once(log: Log) -> None:
    run = sample_run(events=12, seed=7)
    log.append([run[0], *run[3:5], *run[6:9]])  # 1, 2 and 5 are missing
    with log.reader() as store:
        query = RunStateQuery(store, topic=TOPIC)
        fresh = iter(query.watch(run[0].run_id))  # opens at 8, lacking 1, 2 and 5
        assert next(fresh).sequence == 8
        resumed = iter(query.watch(run[0].run_id, from_sequence=4))  # "has all up to 3"
        assert [next(resumed).sequence for _ in range(4)] == [4, 6, 7, 8]
        log.append([run[5]])
        late = next(fresh)  # 5, with the state at 8 re-folded with it
        assert (late.sequence, late.event) == (5, run[5])
        assert (late.state.sequence, late.state.event_count) == (8, 7)
        log.append([run[2], run[1], *run[9:]])
        rest = [*range(9, len(run))]
        assert [u.sequence for u in fresh] == [1, 2, *rest]  # late ones in sequence order
        # 1 and 2 were never stored when it resumed: no client can have had them
        assert [u.sequence for u in resumed] == [5, 1, 2, *rest]
        assert [u.sequence for u in query.watch(run[0].run_id, from_sequence=0)] == list(
            range(len(run))
        )
