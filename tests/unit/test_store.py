"""The RocksDB store: key layouts round-trip and sort as numbers; reads see what batches wrote."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from behest.errors import StateLockedError, StoreError
from behest.fold.sequences import RunHead
from behest.fold.store import (
    StateStore,
    StoreBatch,
    decode_u64,
    encode_u64,
    offset_key,
    parse_offset_key,
    parse_run_key,
    parse_sequence_key,
    prefix_end,
    run_key,
    sequence_key,
    time_key,
)

U64 = st.integers(0, 2**64 - 1)
SEQUENCES = st.integers(0, 2**63 - 1)
MICROS = st.integers(-(2**62), 2**62)
TOPICS = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=40)


@given(st.uuids(), SEQUENCES)
def test_sequence_keys_round_trip(run_id: uuid.UUID, sequence: int) -> None:
    run = run_key(run_id)
    assert run == run_key(str(run_id)) == run_id.bytes
    assert parse_run_key(sequence_key(run, sequence)) == run_id
    assert parse_sequence_key(sequence_key(run, sequence)) == (run, sequence)


@given(st.uuids(), SEQUENCES, SEQUENCES)
def test_sequence_keys_sort_as_numbers(run_id: uuid.UUID, a: int, b: int) -> None:
    run = run_id.bytes
    assert (sequence_key(run, a) < sequence_key(run, b)) == (a < b)


@given(st.uuids(), MICROS, MICROS)
def test_time_keys_sort_as_times_before_1970_too(run_id: uuid.UUID, a: int, b: int) -> None:
    run = run_id.bytes
    assert (time_key(run, a) < time_key(run, b)) == (a < b)
    assert time_key(run, a).startswith(run)


@given(TOPICS, st.integers(0, 2**32 - 1))
def test_offset_keys_round_trip_whatever_bytes_the_partition_has(
    topic: str, partition: int
) -> None:
    assert parse_offset_key(offset_key(topic, partition)) == (topic, partition)


@given(U64)
def test_numbers_round_trip(a: int) -> None:
    assert decode_u64(encode_u64(a)) == a


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"a", b"b"), (b"a\xff", b"b"), (b"\x00\xff\xff", b"\x01"), (b"ab\x00", b"ab\x01")],
)
def test_prefix_end_bounds_every_key_with_the_prefix(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end
    assert prefix + b"\xff" * 8 < end


def test_prefix_end_of_only_ff_is_unbounded() -> None:
    with pytest.raises(ValueError, match="no upper bound"):
        prefix_end(b"\xff\xff")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state") as opened:
        yield opened


def fill(store: StateStore, run: bytes) -> None:
    batch = store.batch()
    for sequence in range(10):
        batch.put_event(run, sequence, f"event {sequence}".encode())
    for sequence, micros in ((3, 1_000), (7, 2_000)):
        batch.put_snapshot(run, sequence, micros, f"state {sequence}".encode())
    batch.put_state(run, b"state 9")
    batch.put_head(run, RunHead(9, ((2, 4),)))
    batch.put_index(b"s" + run)
    batch.put_offset("events", 0, 10)
    batch.put_offset("events", 256, 3)
    batch.put_offset("events.dlq", 1, 99)
    store.write(batch)


def test_reads_see_one_written_batch(store: StateStore) -> None:
    run, other = uuid.uuid4().bytes, uuid.uuid4().bytes
    fill(store, run)
    fill(store, other)
    assert list(store.iter_events(run, 4, 6)) == [(s, f"event {s}".encode()) for s in (4, 5, 6)]
    assert [s for s, _ in store.iter_events(run)] == list(range(10))
    assert store.snapshot_at_or_before(run, 2) is None
    assert store.snapshot_at_or_before(run, 5) == (3, b"state 3")
    assert store.snapshot_at_or_before(run, 100) == (7, b"state 7")
    assert store.snapshot_sequence_at_or_before_time(run, 999) is None
    assert store.snapshot_sequence_at_or_before_time(run, 1_999) == 3
    assert store.snapshot_sequence_at_or_before_time(run, 10**12) == 7
    assert store.get_state(run) == b"state 9"
    assert store.get_states([run, b"\x00" * 16, other]) == [b"state 9", None, b"state 9"]
    assert store.get_heads([run, b"\x00" * 16]) == [RunHead(9, ((2, 4),)), None]
    assert store.get_events([(run, 4), (run, 10), (other, 0)]) == [b"event 4", None, b"event 0"]
    assert store.stored_offsets("events") == {0: 10, 256: 3}
    assert sorted(store.scan_index(b"s")) == sorted([b"s" + run, b"s" + other])
    first = min(run, other)
    assert list(store.scan_index(b"s", after=b"s" + first)) == [b"s" + max(run, other)]
    assert dict(store.iter_states()) == {run: b"state 9", other: b"state 9"}


def test_delete_run_leaves_other_runs_alone(store: StateStore) -> None:
    run, other = uuid.uuid4().bytes, uuid.uuid4().bytes
    fill(store, run)
    fill(store, other)
    batch = store.batch()
    batch.delete_run(run)
    store.write(batch)
    assert store.get_state(run) is None
    assert store.get_head(run) is None
    assert list(store.iter_events(run)) == []
    assert store.snapshot_at_or_before(run, 100) is None
    assert store.snapshot_sequence_at_or_before_time(run, 10**12) is None
    assert len(list(store.iter_events(other))) == 10
    assert store.snapshot_at_or_before(other, 100) == (7, b"state 7")


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = StateStore(tmp_path / "state")
    with pytest.raises(StateLockedError, match="in use by another projector"):
        StateStore(tmp_path / "state")
    first.close()
    StateStore(tmp_path / "state").close()


def test_a_secondary_reads_what_the_writer_wrote_after_catching_up(tmp_path: Path) -> None:
    run = uuid.uuid4().bytes
    with (
        StateStore(tmp_path / "state") as writer,
        StateStore(tmp_path / "state", secondary=True) as reader,
    ):
        assert reader.get_state(run) is None
        fill(writer, run)
        reader.catch_up()
        assert reader.get_state(run) == b"state 9"
        assert reader.stored_offsets("events") == {0: 10, 256: 3}


def test_a_secondary_opens_new_tables_on_the_catching_up_thread(tmp_path: Path) -> None:
    """RocksDB's default (16 table-opening threads) starts and joins 15 threads on every
    catch-up, even with no new table: ~10 ms each on a busy machine, with the GIL held,
    which every watcher waited out. A secondary opens tables itself (its log says so);
    the writer keeps the default, for opening a large store fast."""
    with StateStore(tmp_path / "state") as writer:
        fill(writer, uuid.uuid4().bytes)
        with StateStore(tmp_path / "state", secondary=True):
            (log,) = tmp_path.glob(".state.secondary-*/LOG")
            assert "Options.max_file_opening_threads: 1\n" in log.read_text()
        assert "Options.max_file_opening_threads: 16\n" in (tmp_path / "state" / "LOG").read_text()


def test_a_secondary_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="run `behest project` first"):
        StateStore(tmp_path / "nothing", secondary=True)


def test_a_secondary_leaves_no_folder_behind_when_closed(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state") as writer:
        fill(writer, uuid.uuid4().bytes)
        for _ in range(3):
            StateStore(tmp_path / "state", secondary=True).close()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


KEYS = st.lists(st.binary(min_size=1, max_size=3), max_size=25, unique=True)
BOUND = st.none() | st.binary(max_size=3)


@settings(deadline=None, max_examples=40)  # a RocksDB opened per example
@given(KEYS, st.binary(max_size=2), BOUND, BOUND, st.booleans())
def test_range_scans_equal_a_sorted_filter(
    tmp_path_factory: pytest.TempPathFactory,
    keys: list[bytes],
    prefix: bytes,
    after: bytes | None,
    before: bytes | None,
    reverse: bool,
) -> None:
    """`scan_states` and `scan_index`, forward and backward, with any bounds: exactly the
    keys under the prefix strictly between the bounds, in (reversed) byte order."""
    with StateStore(tmp_path_factory.mktemp("range")) as store:
        batch = store.batch()
        for key in keys:
            batch.put_state(key, b"v" + key)
            batch.put_index(key)
        store.write(batch)
        expected = sorted(
            k
            for k in keys
            if k.startswith(prefix)
            and (after is None or k > after)
            and (before is None or k < before)
        )
        if reverse:
            expected.reverse()
        found = store.scan_states(prefix, after=after, before=before, reverse=reverse)
        assert [(k, v) for k, v in found] == [(k, b"v" + k) for k in expected]
        index = store.scan_index(prefix, after, before=before, reverse=reverse)
        assert list(index) == expected


def test_last_event_and_snapshot_by_time(tmp_path: Path) -> None:
    run, other = uuid.uuid4().bytes, uuid.uuid4().bytes
    with StateStore(tmp_path) as store:
        assert store.last_event(run) is None
        batch = store.batch()
        batch.put_events(run, [(0, b"e0"), (1, b"e1"), (2, b"e2")])
        batch.put_events(other, [(0, b"o0")])
        batch.put_snapshot(run, 1, 1_000, b"s1")
        store.write(batch)
        assert store.last_event(run) == (2, b"e2")
        assert store.snapshot_at_or_before_time(run, 999) is None
        assert store.snapshot_at_or_before_time(run, 1_000) == (1, b"s1")
        assert list(store.iter_events(run, 1)) == [(1, b"e1"), (2, b"e2")]
        assert list(store.iter_events(run, 0, 1)) == [(0, b"e0"), (1, b"e1")]


def test_a_secondary_catches_up_only_when_the_writer_wrote(tmp_path: Path) -> None:
    key = uuid.uuid4().bytes
    with StateStore(tmp_path) as writer:
        writer.write(_one_state(writer, key, b"1"))
        with StateStore(tmp_path, secondary=True) as reader:
            assert reader.get_state(key) == b"1"
            reader.catch_up_if_changed()  # the first look: caught up with whatever it finds
            assert not reader.catch_up_if_changed()  # nothing new since
            writer.write(_one_state(writer, key, b"2"))
            assert reader.catch_up_if_changed()
            assert reader.get_state(key) == b"2"
            assert not reader.catch_up_if_changed()


def _one_state(store: StateStore, key: bytes, value: bytes) -> StoreBatch:
    batch = store.batch()
    batch.put_state(key, value)
    return batch
