"""Partition stores across owners: a reader follows a writer that reopened its store, and a
writer waits (bounded) for a store another process of the node is still closing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from behest.errors import StateLockedError
from behest.fold.layout import Layout, Manifest
from behest.fold.partitions import GenerationStores
from behest.fold.store import StateStore

RUN = b"\x01" * 16


def _generation(tmp_path: Path) -> tuple[Layout, Manifest]:
    layout = Layout.of(tmp_path / "state", "run_state")
    return layout, layout.create(version=1, topic="t", partitions=2, run_keyed=True)


def _fold(store: StateStore, state: bytes, offset: int) -> None:
    batch = store.batch()
    batch.put_state(RUN, state)
    batch.put_offset("t", 0, offset)
    store.write(batch)


def test_a_reader_sees_what_a_writer_recovered_when_it_reopened_its_store(
    tmp_path: Path,
) -> None:
    layout, manifest = _generation(tmp_path)
    writer = GenerationStores(layout, manifest, secondary=False)
    _fold(writer.open(0), b"v1", 1)
    reader = GenerationStores(layout, manifest, secondary=True)
    reader.discover()
    reader.catch_up()
    _fold(writer.open(0), b"v2", 2)  # not caught up with before ...
    writer.close_partition(0)  # ... the partition is revoked, and assigned here again:
    _fold(writer.open(0), b"v2", 3)  # its recovery flushed v2 where a catch-up misses it
    reader.catch_up()
    store = reader.get(0)
    assert store is not None
    assert (store.stored_offsets("t"), store.get_state(RUN)) == ({0: 3}, b"v2")
    reader.close()
    writer.close()


def test_a_writer_waits_for_the_previous_holder_to_close_a_store(tmp_path: Path) -> None:
    layout, manifest = _generation(tmp_path)
    holder = GenerationStores(layout, manifest, secondary=False)
    holder.open(1)
    taker = GenerationStores(layout, manifest, secondary=False, handover_wait=20)
    opened = threading.Event()

    def take() -> None:
        taker.open(1)
        opened.set()

    thread = threading.Thread(target=take)
    thread.start()
    time.sleep(0.3)
    assert not opened.is_set()  # still held
    holder.close_partition(1)  # the revocation closes it
    assert opened.wait(10)
    thread.join()
    taker.close()


def test_a_store_held_past_the_wait_is_a_clear_error(tmp_path: Path) -> None:
    layout, manifest = _generation(tmp_path)
    holder = GenerationStores(layout, manifest, secondary=False)
    holder.open(0)
    taker = GenerationStores(layout, manifest, secondary=False, handover_wait=0.3)
    with pytest.raises(StateLockedError, match="in use by another projector"):
        taker.open(0)
    holder.close()
