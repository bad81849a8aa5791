"""The batch fold the Projector runs, through the testing driver and a real RocksDB.

No broker: `ProjectionDriver` hands records to the Projector's own `BatchFolder`, so what
holds here (any batch split gives the same store; duplicates, gaps, tombstones and
poison are handled in the batch that carries them) holds for the Projector.
"""

from __future__ import annotations

import logging
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behest.codec import decode_record, encode, encode_record
from behest.errors import ProduceError
from behest.events import AgentEvent, RunId, TextDelta
from behest.fold.catalog import installed_projections, load_projection
from behest.fold.engine import (
    HEADER_ERROR,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_TOPIC,
    BatchFolder,
    DeadLetter,
)
from behest.fold.projection import Projection, fold, fold_by_key
from behest.fold.sequences import RunHead
from behest.fold.store import FAMILIES, StateStore, parse_sequence_key
from behest.projections import RunStateProjection, ToolUsageProjection
from behest.testing import ProjectionDriver, Tombstone, run_projection, sample_run
from tests.unit.strategies import run_histories

RUN_STATE = RunStateProjection()


class Record:
    """A Kafka record of partition 0, as `BatchFolder` reads one."""

    def __init__(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._offset, self._key, self._value = offset, key, value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def dump(store: StateStore) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every key and value of every column family."""
    return {name: list(getattr(store, name).items()) for name in FAMILIES}


def records(events: list[AgentEvent]) -> list[Any]:
    return [decode_record(encode(e)) for e in events]


def interleave(runs: list[list[AgentEvent]], rng: random.Random) -> list[AgentEvent]:
    """The runs' events mixed as live traffic mixes them, each run still in order."""
    queues = [list(run) for run in runs]
    mixed = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        mixed.append(queue.pop(0))
    return mixed


def splits(total: int, sizes: list[int]) -> list[int]:
    cuts, at = [], 0
    for size in sizes:
        if at >= total:
            break
        cuts.append(min(size, total - at))
        at += size
    if at < total:
        cuts.append(total - at)
    return cuts


def _run_of(run: list[AgentEvent]) -> uuid.UUID:
    return run[0].run_id


SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    runs=st.lists(run_histories(max_events=12), min_size=1, max_size=4, unique_by=_run_of),
    sizes=st.lists(st.integers(1, 9), max_size=12),
    seed=st.integers(0, 2**32),
    name=st.sampled_from(sorted(installed_projections())),
)
def test_any_batch_split_stores_exactly_what_one_batch_does(
    tmp_path: Path,
    runs: list[list[AgentEvent]],
    sizes: list[int],
    seed: int,
    name: str,
) -> None:
    rng = random.Random(seed)
    stream: list[AgentEvent | Tombstone] = list(interleave(runs, rng))
    # Replays (a producer retrying), and a run deleted mid-stream then reused.
    for _ in range(rng.randint(0, 3)):
        stream.insert(rng.randrange(len(stream) + 1), rng.choice(stream))
    doomed = runs[0][0].run_id
    stream.insert(rng.randrange(len(stream) + 1), Tombstone(doomed))
    projection = load_projection(name)
    folder = tmp_path / uuid.uuid4().hex
    with ProjectionDriver(projection, folder / "one", partitions=3, snapshot_every=3) as one:
        one.feed(stream)
        whole = dump(one.partition_store())
    with ProjectionDriver(projection, folder / "many", partitions=3, snapshot_every=3) as many:
        at = 0
        for size in splits(len(stream), sizes):
            many.feed(stream[at : at + size])
            at += size
        assert dump(many.partition_store()) == whole
        assert not many.dead_letters


@settings(SETTINGS, max_examples=12)
@given(
    runs=st.lists(run_histories(max_events=12), min_size=1, max_size=4, unique_by=_run_of),
    seed=st.integers(),
)
def test_the_store_holds_what_a_plain_fold_computes(
    tmp_path: Path, runs: list[list[AgentEvent]], seed: int
) -> None:
    stream = interleave(runs, random.Random(seed))
    for name in installed_projections():
        projection: Projection[Any] = load_projection(name)
        states = run_projection(projection, stream, directory=tmp_path / uuid.uuid4().hex)
        assert states == fold_by_key(projection, records(stream)), name


def test_duplicates_are_folded_once_and_counted(tmp_path: Path) -> None:
    run = sample_run(seed=1)
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        first = driver.feed(run[:5])[0]
        again = driver.feed([run[2], run[4], run[5], run[5]])[0]
        assert (first.folded, first.duplicates) == (5, 0)
        assert (again.folded, again.duplicates) == (1, 3)
        state = driver.state(run[0].run_id.bytes)
        assert state is not None
        assert (state["event_count"], state["sequence"]) == (6, 5)
        assert [s for s, _ in driver.store.iter_events(run[0].run_id.bytes)] == list(range(6))


def test_a_gap_is_folded_recorded_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = sample_run(seed=2)
    key = run[0].run_id.bytes
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        with caplog.at_level(logging.WARNING, logger="behest.fold.engine"):
            result = driver.feed([*run[:3], *run[6:8], run[10]])[0]
        assert (result.folded, result.gaps) == (6, 2)
        assert driver.store.get_head(key) == RunHead(10, ((3, 5), (8, 9)))
        assert str(run[0].run_id) in caplog.text
        assert "sequences 3..5 missing" in caplog.text
        assert "sequences 8..9 missing" in caplog.text
        state = driver.state(key)
        assert state is not None
        assert (state["event_count"], state["sequence"]) == (6, 10)
        # The missing events arriving late fill their gap: the run is folded again.
        late = driver.feed(run[3:6])[0]
        assert (late.folded, late.late_repaired, late.duplicates) == (3, 3, 0)
        assert driver.store.get_head(key) == RunHead(10, ((8, 9),))
        assert driver.state(key) == fold(RUN_STATE, records([*run[:8], run[10]]))


def test_a_run_may_begin_at_any_sequence(tmp_path: Path) -> None:
    run = sample_run(seed=3)
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        result = driver.feed(run[4:9])[0]
        assert (result.folded, result.gaps) == (5, 1)  # 0..3 are missing
        assert driver.store.get_head(run[0].run_id.bytes) == RunHead(8, ((0, 3),))


def test_a_tombstone_deletes_everything_of_its_run_only(tmp_path: Path) -> None:
    doomed, kept = sample_run(seed=4, events=40), sample_run(seed=5, events=40)
    key = doomed[0].run_id.bytes
    with ProjectionDriver(RUN_STATE, tmp_path, snapshot_every=4) as driver:
        driver.feed(interleave([doomed, kept], random.Random(0)), batch_size=16)
        before = dump(driver.partition_store())
        assert driver.store.snapshot_at_or_before(key, 100) is not None
        result = driver.feed([Tombstone(doomed[0].run_id)])[0]
        assert result.tombstones == 1
        after = dump(driver.partition_store())
    for family in FAMILIES:
        if family in ("offsets", "schemas"):  # positions and writer schemas are not per run
            continue
        remaining = {k for k, _ in after[family]}
        gone = [k for k, _ in before[family] if k not in remaining]
        assert gone, f"{family} held nothing of the run"
        assert all(key in k for k in gone), family
        assert not any(key in k for k in remaining), family


def test_a_run_deleted_mid_batch_starts_afresh(tmp_path: Path) -> None:
    run = sample_run(seed=6)
    run_id = run[0].run_id
    reborn = [e.model_copy(update={"sequence": 7 + n}) for n, e in enumerate(run[:3])]
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        driver.feed([*run[:5], Tombstone(run_id), *reborn])
        state = driver.state(run_id.bytes)
        assert state is not None
        assert (state["event_count"], state["sequence"]) == (3, 9)
        assert [s for s, _ in driver.store.iter_events(run_id.bytes)] == [7, 8, 9]
        assert driver.store.get_head(run_id.bytes) == RunHead(9, ((0, 6),))
        index = list(driver.store.scan_index(b""))
        assert len(index) == len(set(RUN_STATE.index_keys(state)))


def test_snapshots_hold_the_state_after_their_sequence(tmp_path: Path) -> None:
    run = sample_run(seed=7, events=30)
    key = run[0].run_id.bytes
    with ProjectionDriver(RUN_STATE, tmp_path, snapshot_every=8) as driver:
        driver.feed(run, batch_size=5)
        store = driver.partition_store()
        expected_at = [s for s in range(len(run)) if (s + 1) % 8 == 0]
        taken = [parse_sequence_key(k)[1] for k, _ in store.snapshots.items()]  # type: ignore[arg-type]
        assert taken == expected_at
        assert len(expected_at) >= 3
        for sequence in expected_at:
            found = store.snapshot_at_or_before(key, sequence + 3)
            assert found is not None
            assert found[0] == sequence
            expected = fold(RUN_STATE, records(run[: sequence + 1]))
            assert RUN_STATE.decode_state(found[1]) == expected
            micros = expected["updated_at"] if expected else 0
            assert store.snapshot_sequence_at_or_before_time(key, micros) == sequence
        assert store.snapshot_at_or_before(key, 6) is None


def poison_cases(run: list[AgentEvent]) -> list[tuple[bytes | None, bytes | None, str]]:
    """Records no projection can fold, each with a word its dead letter's error must say."""
    good = encode(run[1])
    key = str(run[0].run_id).encode()
    other = encode(run[1].model_copy(update={"run_id": RunId(uuid.uuid4())}))
    return [
        (b"not-a-uuid", good, "not a run id"),
        (key.upper(), good, "not a run id"),
        (None, good, "not a run id"),
        (key, b"\x00\x01not avro at all", "single-object"),
        (key, good[:-3], "truncated"),
        (key, other, "is not the event's run_id"),
    ]


def test_poison_is_dead_lettered_and_the_rest_folded(tmp_path: Path) -> None:
    run = sample_run(seed=8)
    key = str(run[0].run_id).encode()
    cases = poison_cases(run)
    # A RunStarted whose metadata is not JSON decodes, but no reader could read it back.
    bad_json = decode_record(encode(run[0]))
    bad_json["sequence"] = len(run)
    bad_json["payload"][1]["metadata"] = "{not json"
    after = run[2].model_copy(update={"sequence": len(run) + 1})
    pairs: list[tuple[bytes | None, bytes | None]] = [(key, encode(run[0]))]
    pairs += [(k, v) for k, v, _ in cases]
    pairs += [(key, encode(e)) for e in run[1:]]
    pairs += [(key, encode_record(bad_json)), (key, encode(after))]
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        result = driver.feed_raw(pairs)
        letters = driver.dead_letters
        state = driver.state(run[0].run_id.bytes)
    assert result.folded == len(run) + 1
    assert result.positions == {0: len(pairs)}
    assert state is not None
    assert state["sequence"] == len(run) + 1
    expected = [(k, v, why) for k, v, why in cases]
    expected.append((key, encode_record(bad_json), "RunStarted.metadata is not valid JSON"))
    assert len(letters) == len(expected)
    for letter, (k, v, why) in zip(letters, expected, strict=True):
        assert (letter.key, letter.value) == (k, v)
        assert why in letter.error, letter.error
    assert [letter.offset for letter in letters] == [*range(1, 1 + len(cases)), len(pairs) - 2]


def test_dead_letters_carry_where_they_came_from() -> None:
    letter = DeadLetter("events", 2, 41, b"k", b"v", "corrupt event body")
    assert dict(letter.headers()) == {
        HEADER_TOPIC: b"events",
        HEADER_PARTITION: b"2",
        HEADER_OFFSET: b"41",
        HEADER_ERROR: b"corrupt event body",
    }


def test_nothing_is_written_when_dead_letters_cannot_be_stored(tmp_path: Path) -> None:
    run = sample_run(seed=9)
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        driver.feed(run[:3])
        before = dump(driver.partition_store())

    def refuse(_: list[DeadLetter]) -> None:
        raise ProduceError("the dead-letter topic is unreachable")

    with StateStore(tmp_path / RUN_STATE.name / "g1" / "p0") as store:  # its partition store
        folder = BatchFolder(store, RUN_STATE, topic="behest.agent-events")
        batch = [Record(3, b"junk", b"junk")]
        batch += [Record(4 + n, str(e.run_id).encode(), encode(e)) for n, e in enumerate(run[3:6])]
        with pytest.raises(ProduceError):
            folder.process(batch, dead_letter=refuse)
        assert dump(store) == before


def test_tool_usage_is_exactly_once_but_keeps_aggregates_past_a_tombstone(
    tmp_path: Path,
) -> None:
    run = sample_run(seed=10, events=60)
    finished = [e for e in run if e.type == "ToolExecutionFinished"]
    assert finished
    with ProjectionDriver(ToolUsageProjection(), tmp_path) as driver:
        driver.feed(run, batch_size=7)
        driver.feed(run[:20])  # replayed: all duplicates
        totals = driver.states()
        assert sum(s["calls"] for s in totals.values()) == len(finished)
        driver.feed([Tombstone(run[0].run_id)])
        assert driver.store.get_head(run[0].run_id.bytes) is None
        assert driver.states() == totals
        # The run id starts afresh: its events count again.
        driver.feed(run[:1] + finished[:1])
        assert sum(s["calls"] for s in driver.states().values()) == len(finished) + 1
        head = RunHead(finished[0].sequence, ((1, finished[0].sequence - 1),))
        assert driver.store.get_head(run[0].run_id.bytes) == head


def test_a_fold_that_raises_does_not_stall_the_batch(tmp_path: Path) -> None:
    class Fussy(RunStateProjection):
        name = "fussy"

        def apply(self, state: Any, event: Any) -> Any:
            if event["payload"][0].endswith("TextDelta"):
                raise ValueError("no deltas here")
            return super().apply(state, event)

    run = sample_run(seed=11)
    deltas = sum(isinstance(e.payload, TextDelta) for e in run)
    with ProjectionDriver(Fussy(), tmp_path) as driver:
        result = driver.feed(run)[0]
        assert result.folded == len(run) - deltas
        assert len(driver.dead_letters) == deltas
        assert all("no deltas here" in d.error for d in driver.dead_letters)
