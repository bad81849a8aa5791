"""Which generation a projector writes (`plan`), and a partitioned fold read as one store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from behest.codec import encode
from behest.config import Settings
from behest.emit.partitioner import partition_for
from behest.errors import StoreError
from behest.fold.engine import BatchResult
from behest.fold.generations import (
    GenerationWriter,
    merge_results,
    plan,
    projection_version,
)
from behest.fold.layout import Layout, Manifest
from behest.fold.projection import combine, combiner
from behest.fold.store import StateStore
from behest.fold.storeset import StoreSet
from behest.projections import RunStateProjection, ToolUsageProjection
from behest.read.query import RunStateQuery
from behest.testing import ProjectionDriver, sample_run

PARTITIONS = 3
TOPIC = "t"


def manifest(generation: int, version: int, *, ready: bool = True, **kw: Any) -> Manifest:
    return Manifest(
        projection="p",
        version=version,
        generation=generation,
        topic=TOPIC,
        partitions=PARTITIONS,
        run_keyed=True,
        created_at=0.0,
        ready_at=1.0 if ready else None,
        **kw,
    )


def test_the_first_generation_is_served_at_once() -> None:
    decided = plan([], None, 1, rebuild=False)
    assert (decided.generation, decided.build) == (None, False)
    # a crash between creating it and serving it: resume that one, served at once
    assert plan([manifest(1, 1, ready=False)], None, 1, rebuild=False).generation == 1


def test_the_served_generation_of_this_version_is_written() -> None:
    decided = plan([manifest(1, 1), manifest(2, 2)], 2, 2, rebuild=False)
    assert (decided.generation, decided.build) == (2, False)


def test_a_new_version_or_a_rebuild_builds_beside_the_served_one() -> None:
    for decided in (
        plan([manifest(1, 1)], 1, 2, rebuild=False),
        plan([manifest(1, 1)], 1, 1, rebuild=True),
    ):
        assert (decided.generation, decided.build) == (None, True)


def test_an_interrupted_build_resumes() -> None:
    decided = plan([manifest(1, 1), manifest(2, 2, ready=False)], 1, 2, rebuild=False)
    assert (decided.generation, decided.build) == (2, True)


def test_an_older_version_than_the_served_one_is_refused() -> None:
    with pytest.raises(StoreError, match="newer than this projector's version 1"):
        plan([manifest(1, 1), manifest(2, 2)], 2, 1, rebuild=False)


def test_a_version_rolled_back_from_does_not_switch_back_by_itself() -> None:
    left = manifest(2, 2, rolled_back_at=time.time())
    with pytest.raises(StoreError, match="generations drop g2"):
        plan([manifest(1, 1), left], 1, 2, rebuild=False)


@pytest.mark.parametrize("bad", [0, -1, True, "2", 1.5])
def test_a_projection_version_is_a_whole_number_from_one(bad: Any) -> None:
    class Odd(RunStateProjection):
        version = bad

    with pytest.raises(ValueError, match="version must be a whole number"):
        projection_version(Odd())
    assert projection_version(RunStateProjection()) == 1


def test_results_of_partitions_add_up() -> None:
    a = BatchResult(records=3, folded=2, positions={0: 5})
    b = BatchResult(records=4, duplicates=1, positions={1: 9})
    total = merge_results([a, b])
    assert (total.records, total.folded, total.duplicates) == (7, 2, 1)
    assert total.positions == {0: 5, 1: 9}


class _Record:
    def __init__(self, partition: int, offset: int, key: bytes, value: bytes) -> None:
        self._p, self._o, self._k, self._v = partition, offset, key, value

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v


def fold_partitioned(tmp_path: Path, projection: Any, events: list[Any]) -> Layout:
    """Fold `events` as a projector owning every partition would: one store per partition."""
    layout = Layout.of(tmp_path / "state", projection.name)
    made = layout.create(
        version=1, topic=TOPIC, partitions=PARTITIONS, run_keyed=projection.run_keyed
    )
    writer = GenerationWriter(layout, made, projection, member="me", snapshot_every=4)
    writer.add(range(PARTITIONS))
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    records = []
    for event in events:
        key = str(event.run_id).encode()
        partition = partition_for(key, PARTITIONS)
        records.append(_Record(partition, offsets[partition], key, encode(event)))
        offsets[partition] += 1
    for start in range(0, len(records), 50):
        writer.process(records[start : start + 50])
    writer.switch()
    writer.close()
    return layout


def test_partition_stores_read_as_one_equal_a_single_store(tmp_path: Path) -> None:
    runs = [sample_run(seed=n, events=40) for n in range(12)]
    events = [e for n in range(40) for run in runs if n < len(run) for e in [run[n]]]
    layout = fold_partitioned(tmp_path, RunStateProjection(), events)
    assert sorted(layout.stored_partitions(1)) == list(range(PARTITIONS))
    with (
        ProjectionDriver(RunStateProjection(), tmp_path / "single", snapshot_every=4) as single,
        StoreSet.open(layout.root.parent, "run_state") as stores,
    ):
        single.feed(events)
        keys = [run[0].run_id.bytes for run in runs]
        assert stores.get_states(keys) == single.store.get_states(keys)
        assert list(stores.iter_states()) == list(single.store.iter_states())
        assert list(stores.scan_index(b"")) == list(single.store.scan_index(b""))
        for reverse in (False, True):
            assert list(stores.scan_index(b"a", reverse=reverse)) == list(
                single.store.scan_index(b"a", reverse=reverse)
            )
            assert list(stores.scan_states(reverse=reverse)) == list(
                single.store.scan_states(reverse=reverse)
            )
        for key in keys[:3]:
            assert list(stores.iter_events(key, 3, 9)) == list(single.store.iter_events(key, 3, 9))
            assert stores.get_head(key) == single.store.get_head(key)
            assert stores.snapshot_at_or_before(key, 10) == single.store.snapshot_at_or_before(
                key, 10
            )
        assert sum(stores.stored_offsets(TOPIC).values()) == len(events)
        # the query over partition stores answers as over one store
        many = RunStateQuery(stores, topic=TOPIC)
        one = RunStateQuery(single.store, topic=TOPIC)
        ids = [run[0].run_id for run in runs]
        assert many.get_many(ids) == one.get_many(ids)
        assert stores.last_event(ids[0].bytes) == single.store.last_event(ids[0].bytes)
        assert many.list_runs(limit=5) == one.list_runs(limit=5)
        mid = runs[0][len(runs[0]) // 2]
        assert many.get_at(mid.run_id, as_of=mid.timestamp) == one.get_at(
            mid.run_id, as_of=mid.timestamp
        )


def test_shares_of_an_aggregate_combine_to_the_whole(tmp_path: Path) -> None:
    projection = ToolUsageProjection()
    runs = [sample_run(seed=n, events=40) for n in range(10)]
    events = [e for run in runs for e in run]
    layout = fold_partitioned(tmp_path, projection, events)
    with ProjectionDriver(projection, tmp_path / "single") as single:
        single.feed(events)
        whole = single.states()
    state_dir = layout.root.parent
    with StoreSet.open(state_dir, projection.name) as raw:
        shared = {key for key, shares in raw.iter_state_parts() if len(shares) > 1}
        assert shared  # some tool is used on several partitions
        with pytest.raises(StoreError, match="combine"):
            raw.get_state(next(iter(shared)))
        parts = {
            key: combine(projection, [projection.decode_state(v) for v in shares])
            for key, shares in raw.iter_state_parts()
        }
        assert parts == whole
    with StoreSet.open(state_dir, projection.name, combine=combiner(projection)) as stores:
        decode = projection.decode_state
        assert {k: decode(v) for k, v in stores.iter_states()} == whole
        keys = sorted(whole)
        assert [decode(v) for v in stores.get_states(keys) if v] == [whole[k] for k in keys]


def test_a_reader_follows_a_switch_and_a_rollback(tmp_path: Path) -> None:
    first = [sample_run(seed=1, events=10)]
    layout = fold_partitioned(tmp_path, RunStateProjection(), first[0])
    key = first[0][0].run_id.bytes
    with StoreSet.open(layout.root.parent, "run_state") as reader:
        assert reader.generation == 1 and reader.get_state(key) is not None
        second = sample_run(seed=2, events=10)
        fold_partitioned(tmp_path, RunStateProjection(), second)  # g2, switched to
        assert reader.get_state(key) is not None  # still g1 until it catches up
        assert reader.catch_up() and reader.generation == 2
        assert reader.get_state(key) is None
        assert reader.get_state(second[0].run_id.bytes) is not None
        layout.rollback()
        assert reader.catch_up() and reader.generation == 1
        assert reader.get_state(key) is not None


def test_a_single_store_state_dir_from_before_generations_is_refused(tmp_path: Path) -> None:
    with ProjectionDriver(RunStateProjection(), tmp_path / "new") as driver:
        driver.feed(sample_run(seed=3, events=5))
    legacy = StateStore(tmp_path / "run_state")  # the layout of behest before generations
    legacy.close()
    with pytest.raises(StoreError, match=r"behest project --rebuild"):
        StoreSet.open(tmp_path, "run_state")
    with pytest.raises(StoreError, match=r"behest project --rebuild"):
        RunStateQuery.open(Settings(state_dir=tmp_path))
