"""The projector's heartbeat file: written atomically at most once an interval, read back."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from behest.fold.heartbeat import Heartbeat, HeartbeatWriter, heartbeat_path, read_heartbeat
from behest.read.health import ProjectorWatch

partitions = st.integers(min_value=0, max_value=1000)


@given(
    st.builds(
        Heartbeat,
        projection=st.sampled_from(["run_state", "tool_usage"]),
        pid=st.integers(min_value=1, max_value=2**22),
        at=st.floats(min_value=0, max_value=4e9),
        started_at=st.floats(min_value=0, max_value=4e9),
        instance=st.none() | st.text(max_size=40),
        stopped=st.booleans(),
        assigned=st.lists(partitions, max_size=5).map(tuple),
        lag=st.dictionaries(partitions, st.integers(min_value=0, max_value=2**40), max_size=5),
        lag_seconds=st.dictionaries(partitions, st.floats(min_value=0, max_value=1e7), max_size=5),
    )
)
def test_a_heartbeat_survives_its_json(beat: Heartbeat) -> None:
    assert Heartbeat.from_json(beat.to_json()) == beat


def test_the_writer_beats_once_an_interval_and_replaces_the_file(tmp_path: Path) -> None:
    now = [1000.0]
    path = heartbeat_path(tmp_path, "run_state")
    writer = HeartbeatWriter(path, interval=1.0, clock=lambda: now[0])
    made: list[float] = []

    def beat(at: float, started_at: float) -> Heartbeat:
        made.append(at)
        return Heartbeat("run_state", 7, at, started_at)

    writer.beat(beat)
    now[0] += 0.5
    writer.beat(beat)  # not due: not even built
    now[0] += 0.6
    writer.beat(beat)
    assert made == [1000.0, 1001.1]
    found = read_heartbeat(path)
    assert found is not None and (found.at, found.started_at) == (1001.1, 1000.0)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_no_heartbeat_or_a_garbled_one_reads_as_none(tmp_path: Path) -> None:
    path = heartbeat_path(tmp_path, "run_state", worker="2")
    assert path.name == "run_state-2.heartbeat.json"
    assert read_heartbeat(path) is None
    path.write_bytes(b'{"projection": "run_state"')
    assert read_heartbeat(path) is None
    path.write_bytes(b'{"pid": 1}')
    assert read_heartbeat(path) is None


def test_the_watch_says_why_a_projector_is_not_ready(tmp_path: Path) -> None:
    now = 5000.0
    path = heartbeat_path(tmp_path, "run_state")
    watch = ProjectorWatch(path, max_lag=10.0, stale_after=5.0, clock=lambda: now)
    writer = HeartbeatWriter(path)
    base = Heartbeat(
        "run_state",
        9,
        now - 1,
        now - 100,
        assigned=(0, 1),
        lag={0: 0, 1: 0},
        lag_seconds={0: 0, 1: 0},
    )

    assert not watch.check().alive
    writer.write(base)
    health = watch.check()
    assert (health.alive, health.ready, health.reason) == (True, True, None)
    assert health.age == 1.0
    writer.write(Heartbeat("run_state", 9, now - 5.5, now - 100))
    health = watch.check()
    assert not health.alive and health.reason is not None and "5.5 s ago" in health.reason
    writer.write(
        Heartbeat(
            "run_state", 9, now, now - 100, assigned=(0, 1), lag={1: 8}, lag_seconds={1: 10.5}
        )
    )
    assert watch.check().reason == "the lag of partitions [0] is not known yet"
    writer.write(
        Heartbeat(
            "run_state",
            9,
            now,
            now - 100,
            assigned=(0, 1),
            lag={0: 0, 1: 8},
            lag_seconds={0: 0.0, 1: 10.5},
        )
    )
    health = watch.check()
    assert health.alive and not health.ready
    assert health.reason == "partition 1 is 10.5 s (8 records) behind the log, over the 10 s bound"
