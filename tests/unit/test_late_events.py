"""Late events, duplicates and conflicts in the batch engine (the contract's "Sequences" rule).

An event below its run's head that was never folded is late: it is stored and the run is
folded again from the nearest snapshot before it, so the store ends up exactly as if every
event had arrived in order. A repeat with the same bytes is a duplicate (skipped); a
different event under a folded sequence is a conflict (dead-lettered).
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behest.codec import encode
from behest.events import AgentEvent, RunStarted, TextDelta
from behest.fold.projection import Projection, fold
from behest.fold.sequences import RunHead
from behest.fold.store import FAMILIES, StateStore
from behest.projections import RunStateProjection, ToolUsageProjection
from behest.testing import ProjectionDriver, sample_run
from tests.unit.strategies import run_histories
from tests.unit.test_projection import records

RUN_STATE = RunStateProjection()


def contents(store: StateStore) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every family but the offsets (a log with repeats has more records, so other offsets)."""
    return {name: list(getattr(store, name).items()) for name in FAMILIES if name != "offsets"}


def _run_of(run: list[AgentEvent]) -> uuid.UUID:
    return run[0].run_id


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.lists(run_histories(max_events=14), min_size=1, max_size=3, unique_by=_run_of),
    seed=st.integers(0, 2**32),
    projection=st.sampled_from([RUN_STATE, ToolUsageProjection()]),
)
def test_any_order_of_delivery_stores_what_the_order_of_sequences_does(
    tmp_path: Path, runs: list[list[AgentEvent]], seed: int, projection: Projection[Any]
) -> None:
    rng = random.Random(seed)
    events = [event for run in runs for event in run]
    # Each event at least once, some again, in any order, in batches of any size.
    delivered = events + [rng.choice(events) for _ in range(rng.randint(0, 4))]
    rng.shuffle(delivered)
    folder = tmp_path / uuid.uuid4().hex
    with ProjectionDriver(projection, folder / "ordered", snapshot_every=3) as ordered:
        ordered.feed(events)
        expected = contents(ordered.partition_store())
    with ProjectionDriver(projection, folder / "shuffled", snapshot_every=3) as shuffled:
        at = 0
        while at < len(delivered):
            size = rng.randint(1, 6)
            shuffled.feed(delivered[at : at + size])
            at += size
        assert contents(shuffled.partition_store()) == expected
        assert not shuffled.dead_letters
        assert all(shuffled.store.get_head(r[0].run_id.bytes) == RunHead(len(r) - 1) for r in runs)


def test_a_late_run_started_is_folded_first(tmp_path: Path) -> None:
    run = sample_run(seed=21, events=12)
    key = run[0].run_id.bytes
    with ProjectionDriver(RUN_STATE, tmp_path, snapshot_every=4) as driver:
        early = driver.feed(run[1:])[0]
        state = driver.state(key)
        assert state is not None
        assert (state["session_id"], state["provider"], state["model"]) == (None, None, None)
        assert early.gaps == 1
        assert driver.store.get_head(key) == RunHead(len(run) - 1, ((0, 0),))
        late = driver.feed(run[:1])[0]
        assert (late.folded, late.late_repaired, late.duplicates) == (1, 1, 0)
        assert driver.state(key) == fold(RUN_STATE, records(run))
        assert driver.store.get_head(key) == RunHead(len(run) - 1)
        for sequence in (3, 7, 11):  # every snapshot is of the run folded in order
            snapshot = driver.store.snapshot_at_or_before(key, sequence)
            assert snapshot is not None
            assert RUN_STATE.decode_state(snapshot[1]) == fold(
                RUN_STATE, records(run[: sequence + 1])
            )


def test_a_duplicate_is_skipped_and_a_conflict_dead_lettered(tmp_path: Path) -> None:
    run = sample_run(seed=22, events=8)
    key = run[0].run_id.bytes
    impostor = run[3].model_copy(update={"event_id": uuid.uuid4(), "payload": TextDelta(delta="!")})
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        driver.feed(run)
        before = contents(driver.partition_store())
        # Against the stored event, and against one earlier in the same batch.
        result = driver.feed([run[3], impostor, run[5]])[0]
        assert (result.folded, result.duplicates) == (0, 2)
        in_batch = run[-1].model_copy(update={"sequence": len(run)})
        clash = impostor.model_copy(update={"sequence": len(run)})
        again = driver.feed([in_batch, clash, in_batch])[0]
        assert (again.folded, again.duplicates) == (1, 1)
        assert [letter.value for letter in driver.dead_letters] == [encode(impostor), encode(clash)]
        assert all("conflict" in letter.error for letter in driver.dead_letters)
        after = contents(driver.partition_store())
        assert after["events"][:-1] == before["events"]
        state = driver.state(key)
        assert state is not None
        assert state["event_count"] == len(run) + 1


def test_an_event_refused_by_the_fold_is_late_when_replayed_after_a_fix(tmp_path: Path) -> None:
    class Strict(RunStateProjection):
        refuse = True

        def apply(self, state: Any, event: Any) -> Any:
            if self.refuse and event["sequence"] == 4:
                raise ValueError("not today")
            return super().apply(state, event)

    strict = Strict()
    run = sample_run(seed=23, events=10)
    key = run[0].run_id.bytes
    with ProjectionDriver(strict, tmp_path, snapshot_every=3) as driver:
        driver.feed(run)
        assert [letter.value for letter in driver.dead_letters] == [encode(run[4])]
        assert driver.store.get_head(key) == RunHead(len(run) - 1, ((4, 4),))
        strict.refuse = False
        replay = driver.feed([run[4]])[0]
        assert (replay.late_repaired, replay.duplicates) == (1, 0)
        assert driver.state(key) == fold(RUN_STATE, records(run))
        assert [s for s, _ in driver.store.iter_events(key)] == list(range(len(run)))


def test_a_late_event_of_a_store_without_gap_ranges_is_found_missing(tmp_path: Path) -> None:
    """A store written before gaps were tracked knows only the highest sequence: an event
    below it with nothing stored under its sequence is late all the same."""
    run = sample_run(seed=24, events=9)
    key = run[0].run_id.bytes
    with ProjectionDriver(RUN_STATE, tmp_path, snapshot_every=4) as driver:
        driver.feed([*run[:2], *run[3:]])
        store = driver.partition_store()
        batch = store.batch()
        batch.put_head(key, RunHead(len(run) - 1))  # the gap at 2 forgotten
        store.write(batch)
        result = driver.feed([run[2], run[5]])[0]
        assert (result.late_repaired, result.duplicates) == (1, 1)
        assert driver.state(key) == fold(RUN_STATE, records(run))


def test_late_events_of_a_deleted_run_start_it_afresh(tmp_path: Path) -> None:
    from behest.testing import Tombstone

    run = sample_run(seed=25, events=6)
    key = run[0].run_id.bytes
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        driver.feed([*run[2:], Tombstone(run[0].run_id), run[1], run[0]])
        assert driver.state(key) == fold(RUN_STATE, records(run[:2]))
        assert driver.store.get_head(key) == RunHead(1)


def test_a_run_started_with_null_fields_keeps_no_session_index(tmp_path: Path) -> None:
    run = sample_run(seed=26, events=5)
    assert isinstance(run[0].payload, RunStarted)
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        driver.feed(run[1:])
        assert not list(driver.store.scan_index(b"s"))
        driver.feed(run[:1])
        session = run[0].payload.session_id.bytes
        assert len(list(driver.store.scan_index(b"s" + session))) == 1


def test_repeats_in_one_batch_are_told_apart_across_a_tombstone(tmp_path: Path) -> None:
    from behest.testing import Tombstone

    run = sample_run(seed=26, events=4)
    key = run[0].run_id.bytes
    other = run[1].model_copy(update={"event_id": uuid.uuid4(), "payload": TextDelta(delta="?")})
    with ProjectionDriver(RUN_STATE, tmp_path) as driver:
        # before the tombstone: run[0], run[1], run[1] again (a duplicate); after it, the run
        # starts afresh: run[0] and `other` under sequence 1 are no conflict with what the
        # tombstone deleted, but `other`'s repeat is a duplicate and run[1] then a conflict
        batch = [run[0], run[1], run[1], Tombstone(run[0].run_id), run[0], other, other, run[1]]
        result = driver.feed(batch)[0]
        assert (result.duplicates, result.tombstones) == (2, 1)
        assert [letter.value for letter in driver.dead_letters] == [encode(run[1])]
        assert driver.state(key) == fold(RUN_STATE, records([run[0], other]))
        assert driver.store.get_head(key) == RunHead(1)
