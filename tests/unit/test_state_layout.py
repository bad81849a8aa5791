"""The on-disk layout of generations and partitions: names, manifests, switch, owners."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from behest.errors import StoreError
from behest.fold.layout import (
    CURRENT,
    Layout,
    Manifest,
    generation_name,
    parse_generation,
    parse_partition_dir,
    partition_dir_name,
)


def make(layout: Layout, version: int = 1, partitions: int = 3) -> Manifest:
    return layout.create(version=version, topic="t", partitions=partitions, run_keyed=True)


@given(st.integers(min_value=1, max_value=10**9))
def test_generation_names_round_trip(number: int) -> None:
    assert parse_generation(generation_name(number)) == number


@given(st.integers(min_value=0, max_value=10**6))
def test_partition_dir_names_round_trip(partition: int) -> None:
    assert parse_partition_dir(partition_dir_name(partition)) == partition


@pytest.mark.parametrize("name", ["g0", "g01", "gx", "p1", "", "g-1", ".g1.secondary"])
def test_other_names_are_no_generation(name: str) -> None:
    assert parse_generation(name) is None


@pytest.mark.parametrize("name", ["p01", "p", "g1", ".p1.secondary-x", "p-1"])
def test_other_names_are_no_partition(name: str) -> None:
    assert parse_partition_dir(name) is None


@given(
    st.builds(
        Manifest,
        projection=st.text(min_size=1, max_size=8),
        version=st.integers(1, 99),
        generation=st.integers(1, 99),
        topic=st.text(min_size=1, max_size=8),
        partitions=st.integers(1, 64),
        run_keyed=st.booleans(),
        created_at=st.floats(0, 2e9),
        targets=st.dictionaries(st.integers(0, 63), st.integers(0, 2**62)),
        ready_at=st.none() | st.floats(0, 2e9),
        rolled_back_at=st.none() | st.floats(0, 2e9),
    )
)
def test_manifests_round_trip_through_json(manifest: Manifest) -> None:
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_a_broken_manifest_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match=r"unreadable.*generations drop"):
        Manifest.from_json(b"{not json")


def test_generations_number_up_and_the_switch_is_what_readers_see(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path, "run_state")
    assert layout.current() is None and layout.generations() == []
    first, second = make(layout), make(layout, version=2)
    assert (first.generation, second.generation) == (1, 2)
    assert layout.generations() == [1, 2]
    assert not layout.manifest(2).ready
    layout.switch(2)
    assert layout.current() == 2
    assert (tmp_path / "run_state" / CURRENT).read_text() == "g2\n"
    assert layout.manifest(2).ready
    assert [p.name for p in (tmp_path / "run_state").iterdir() if p.name.endswith(".tmp")] == []


def test_rollback_serves_the_previous_ready_generation_and_marks_the_left_one(
    tmp_path: Path,
) -> None:
    layout = Layout.of(tmp_path, "p")
    make(layout)
    layout.switch(1)
    make(layout, version=2)
    with pytest.raises(StoreError, match="no ready generation older"):
        layout.rollback()  # g1 is served: nothing older
    layout.switch(2)
    back = layout.rollback()
    assert back.generation == 1 and layout.current() == 1
    assert layout.manifest(2).rolled_back_at is not None
    layout.switch(2)  # rolling forward again clears the mark
    assert layout.manifest(2).rolled_back_at is None


def test_drop_refuses_the_served_generation_and_removes_others(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path, "p")
    make(layout)
    make(layout)
    layout.switch(2)
    with pytest.raises(StoreError, match="readers are served"):
        layout.drop(2)
    with pytest.raises(StoreError, match="no generation g7"):
        layout.drop(7)
    layout.drop(1)
    assert layout.generations() == [2]
    assert not layout.generation_dir(1).exists()
    assert make(layout).generation == 3  # numbers are never reused while others exist


def test_drop_refuses_a_generation_a_live_projector_writes(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path, "p")
    make(layout)
    make(layout)
    layout.switch(2)
    layout.write_owner(1, "me", [0, 1])
    with pytest.raises(StoreError, match="live projector"):
        layout.drop(1)
    layout.remove_owner(1, "me")
    layout.drop(1)


def test_a_legacy_single_store_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    root = tmp_path / "run_state"
    root.mkdir()
    (root / "MANIFEST-000005").write_bytes(b"")
    (root / CURRENT).write_text("MANIFEST-000005\n")
    layout = Layout(root)
    with pytest.raises(StoreError, match="project --rebuild"):
        layout.check_not_legacy()
    layout.remove_legacy()
    layout.check_not_legacy()
    assert list(root.iterdir()) == []


def test_stored_partitions_are_folders_holding_a_rocksdb(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path, "p")
    make(layout)
    for name, has_db in (("p0", True), ("p2", True), ("p1", False), (".p3.secondary-x", True)):
        folder = layout.generation_dir(1) / name
        folder.mkdir()
        if has_db:
            (folder / CURRENT).write_text("MANIFEST-000001\n")
    assert layout.stored_partitions(1) == [0, 2]


def test_owners_are_live_while_they_heartbeat_and_their_process_exists(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path, "p")
    make(layout)
    layout.write_owner(1, "a", [2, 0])
    assert {p: o.member for p, o in layout.owned_partitions(1).items()} == {0: "a", 2: "a"}
    assert layout.owned_partitions(1, max_age=-1) == {}  # a stale heartbeat counts for nothing
    owner = layout.owners(1)[0]
    assert owner.pid == os.getpid() and owner.partitions == (0, 2)
    assert owner.alive(time.time(), 10.0)
    dead = type(owner)(owner.member, owner.host, 2**22 + 12345, owner.partitions, time.time())
    assert not dead.alive(time.time())  # no such process on this host
    layout.write_owner(1, "a", [])
    assert layout.owned_partitions(1) == {}
