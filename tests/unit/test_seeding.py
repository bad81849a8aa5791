"""A node that gains a partition resumes from the furthest of its own store and its standby
copy: a partition's store seeded from the copy answers what the copy answers."""

from __future__ import annotations

from pathlib import Path

from behest.codec import encode
from behest.emit.partitioner import partition_for
from behest.fold.engine import BatchFolder
from behest.fold.layout import Layout
from behest.fold.partitions import GenerationStores
from behest.fold.seeding import standby_path
from behest.fold.store import StateStore
from behest.projections.run_state import RunStateProjection
from behest.testing import sample_run
from tests.unit.test_generations import _Record

PARTITIONS = 3
TOPIC = "t"
PROJECTION = RunStateProjection()


def _standby_copy(state_dir: Path, events_per_run: int) -> dict[bytes, int]:
    """A standby copy of every partition, as a node's main process folds it; each run's
    key -> its partition."""
    records, offsets, partitions = [], dict.fromkeys(range(PARTITIONS), 0), {}
    for n in range(12):
        for event in sample_run(events=events_per_run, seed=n):
            key = str(event.run_id).encode()
            partition = partition_for(key, PARTITIONS)
            partitions[event.run_id.bytes] = partition
            records.append(_Record(partition, offsets[partition], key, encode(event)))
            offsets[partition] += 1
    with StateStore(standby_path(state_dir, PROJECTION.name)) as copy:
        BatchFolder(copy, PROJECTION, topic=TOPIC).process(records)
    return partitions


def test_a_gained_partition_is_seeded_from_the_standby_copy(tmp_path: Path) -> None:
    runs = _standby_copy(tmp_path, events_per_run=6)
    layout = Layout.of(tmp_path, PROJECTION.name)
    manifest = layout.create(version=1, topic=TOPIC, partitions=PARTITIONS, run_keyed=True)
    writer = GenerationStores(layout, manifest, secondary=False)
    store = writer.open(1)
    with StateStore(standby_path(tmp_path, PROJECTION.name), secondary=True) as copy:
        assert store.stored_offsets(TOPIC) == {1: copy.stored_offsets(TOPIC)[1]}
        for run, partition in runs.items():
            expected = copy.get_state(run) if partition == 1 else None
            assert store.get_state(run) == expected
            if partition == 1:
                assert list(store.iter_events(run)) == list(copy.iter_events(run))
        assert sorted(store.iter_family("index")) == sorted(
            (k, v) for k, v in copy.iter_family("index") if runs[k[-16:]] == 1
        )
    writer.close()


def test_an_own_store_further_on_is_kept(tmp_path: Path) -> None:
    _standby_copy(tmp_path, events_per_run=2)
    layout = Layout.of(tmp_path, PROJECTION.name)
    manifest = layout.create(version=1, topic=TOPIC, partitions=PARTITIONS, run_keyed=True)
    writer = GenerationStores(layout, manifest, secondary=False)
    store = writer.open(0)  # seeded: it had nothing
    seeded = list(store.iter_family("states"))
    assert seeded
    batch = store.batch()
    batch.put_offset(TOPIC, 0, 10_000)
    store.write(batch)
    writer.close_partition(0)
    again = writer.open(0)
    assert again.stored_offsets(TOPIC) == {0: 10_000}
    assert list(again.iter_family("states")) == seeded
    writer.close()
