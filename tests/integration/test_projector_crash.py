"""`behest project` as a process: killed at random moments it still folds every event
exactly once, and two of them in one consumer group split the runs between them.

The expectation is `fold_by_key` over what was produced. Processes are real
subprocesses of the CLI; the tests only look at their RocksDB once they are gone (or,
while they run, through a secondary instance that never blocks them).
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, Producer
from confluent_kafka.admin import AdminClient

from behest.codec import decode_record, encode
from behest.config import Settings
from behest.errors import StoreError
from behest.events import AgentEvent
from behest.fold.projection import fold_by_key
from behest.fold.sequences import RunHead
from behest.fold.storeset import StoreSet
from behest.projections import RunStateProjection
from behest.testing import sample_run

RUN_STATE = RunStateProjection()
KILLS = 4


def behest_command() -> list[str]:
    script = Path(sys.executable).with_name("behest")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from behest.cli import app; app()"]


def stream(seed: int, runs: int, length: int = 20) -> list[AgentEvent]:
    """`runs` runs of about `length` events, interleaved as concurrent runs write them."""
    batches = [sample_run(seed=seed * 10_000 + n, events=length) for n in range(runs)]
    longest = max(len(run) for run in batches)
    return [run[i] for i in range(longest) for run in batches if i < len(run)]


def produce(
    bootstrap: str, topic: str, events: list[AgentEvent], *, chunk: int, pause: float
) -> dict[int, int]:
    """Produce `events` in chunks with pauses between (a live stream); the next offset of
    every partition once all are delivered."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5}
    )
    ends: dict[int, int] = {}
    errors: list[Any] = []

    def report(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(error)
        else:
            ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)

    for start in range(0, len(events), chunk):
        for event in events[start : start + chunk]:
            producer.produce(
                topic, key=str(event.run_id).encode(), value=encode(event), on_delivery=report
            )
        producer.poll(0)
        time.sleep(pause)
    assert producer.flush(30) == 0
    assert not errors
    return ends


def expected_states(events: list[AgentEvent]) -> dict[bytes, Any]:
    return fold_by_key(RUN_STATE, [decode_record(encode(e)) for e in events])


def stored_states(store: StoreSet) -> dict[bytes, Any]:
    return {key: RUN_STATE.decode_state(value) for key, value in store.iter_states()}


def folded_so_far(state_dir: Path, topic: str) -> int:
    """Records folded by a projector that may be running (read as a secondary)."""
    try:
        store = StoreSet.open(state_dir, RUN_STATE.name)
    except StoreError:  # not created yet, or being created right now
        return 0
    with store:
        return sum(store.stored_offsets(topic).values())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


class ProjectProcess:
    """One `behest project` subprocess, its output kept in a file for failures."""

    def __init__(
        self, settings: Settings, state_dir: Path, group: str, *args: str, **config: str
    ) -> None:
        self.log = state_dir.with_suffix(f".{uuid.uuid4().hex[:6]}.log")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "BEHEST_BOOTSTRAP_SERVERS": settings.bootstrap,
            "BEHEST_TOPIC": settings.topic,
            "BEHEST_STATE_DIR": str(state_dir),
            "BEHEST_KAFKA_CONFIG": json.dumps(config),
        }
        command = [*behest_command(), "project", "--group-id", group, *args]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=out)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"`behest project` did not exit:\n{self.output()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def running(*processes: ProjectProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.kill()


def test_sigkill_at_random_moments_neither_loses_nor_doubles_an_event(
    settings: Settings, bootstrap_servers: str, unique_group: str
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    events = stream(seed % 1000, runs=120)
    state_dir = settings.state_dir
    # Static membership: a restarted projector takes its partitions back at once instead
    # of waiting out the killed one's session.
    config = {"group.instance.id": f"crash-{unique_group}", "session.timeout.ms": "6000"}
    ends: dict[int, int] = {}
    producer = threading.Thread(
        target=lambda: ends.update(
            produce(bootstrap_servers, settings.topic, events, chunk=20, pause=0.1)
        ),
        daemon=True,
    )
    producer.start()
    progress = [0]

    def advanced(process: ProjectProcess) -> bool:
        """New events folded since the last kill (or nothing left to fold), or it died."""
        folded = folded_so_far(state_dir, settings.topic)
        done = not producer.is_alive() and folded == sum(ends.values())
        return folded > progress[-1] or done or process.process.poll() is not None

    for kill in range(KILLS):
        process = ProjectProcess(settings, state_dir, unique_group, "--batch-size", "40", **config)
        with running(process):
            wait_until(functools.partial(advanced, process), 60, f"kill {kill}: progress")
            assert process.process.poll() is None, process.output()
            time.sleep(rng.uniform(0.0, 0.5))
            process.process.send_signal(signal.SIGKILL)
            process.wait(10)
        progress.append(folded_so_far(state_dir, settings.topic))
    producer.join(60)
    assert not producer.is_alive()
    total = sum(ends.values())
    assert 0 < progress[1] < progress[2] < total, f"seed {seed}: kills were not mid-stream"

    final = ProjectProcess(settings, state_dir, unique_group, "--until-caught-up", **config)
    assert final.wait(60) == 0, final.output()
    with StoreSet.open(state_dir, RUN_STATE.name, secondary=False) as store:
        assert store.stored_offsets(settings.topic) == ends
        assert stored_states(store) == expected_states(events), f"seed {seed}"
        by_run: dict[bytes, list[bytes]] = {}
        for event in events:
            by_run.setdefault(event.run_id.bytes, []).append(encode(event))
        for run, values in by_run.items():
            assert [v for _, v in store.iter_events(run)] == values
            assert store.get_head(run) == RunHead(len(values) - 1)


def group_settled(admin: AdminClient, group: str, members: int) -> bool:
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return (
        description.state == ConsumerGroupState.STABLE
        and len(description.members) == members
        and all(m.assignment.topic_partitions for m in description.members)
    )


def committed(admin: AdminClient, group: str) -> dict[int, int]:
    request = [ConsumerGroupTopicPartitions(group)]
    found = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
    return {tp.partition: tp.offset for tp in found.topic_partitions if tp.offset >= 0}


def test_two_projectors_in_one_group_hold_every_run_exactly_once(
    settings: Settings, bootstrap_servers: str, unique_group: str, admin_client: AdminClient
) -> None:
    dirs = [settings.state_dir / "a", settings.state_dir / "b"]
    processes = [ProjectProcess(settings, d, unique_group) for d in dirs]
    with running(*processes):
        wait_until(lambda: group_settled(admin_client, unique_group, 2), 60, "two members assigned")
        events = stream(7, runs=100)
        ends = produce(bootstrap_servers, settings.topic, events, chunk=500, pause=0.0)
        # Each projector commits to Kafka right after each RocksDB write.
        wait_until(lambda: committed(admin_client, unique_group) == ends, 60, "all folded")
        for process in processes:
            process.process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(30) == 0, process.output()

    held = []
    for state_dir in dirs:
        with StoreSet.open(state_dir, RUN_STATE.name, secondary=False) as store:
            held.append((stored_states(store), set(store.stored_offsets(settings.topic))))
    (states_a, partitions_a), (states_b, partitions_b) = held
    assert states_a and states_b
    assert not set(states_a) & set(states_b)
    assert {**states_a, **states_b} == expected_states(events)
    assert not partitions_a & partitions_b
    assert partitions_a | partitions_b == set(ends)


def test_a_restarted_projector_folds_again_within_seconds_of_a_kill(
    settings: Settings, bootstrap_servers: str, unique_group: str
) -> None:
    """Static membership: the group hands a restarted projector its partitions back at once.

    The session timeout is 30 s, so a projector that had to wait out its killed
    predecessor's session (a dynamic member) could not fold within the bound.
    """
    state_dir = settings.state_dir
    events = iter(stream(11, runs=3, length=4))

    def fold_one() -> float:
        """Seconds until the next event is folded, from now."""
        started = time.monotonic()
        before = folded_so_far(state_dir, settings.topic)
        produce(bootstrap_servers, settings.topic, [next(events)], chunk=1, pause=0.0)
        wait_until(lambda: folded_so_far(state_dir, settings.topic) > before, 60, "a fold")
        return time.monotonic() - started

    args = ("--session-timeout", "30")
    first = ProjectProcess(settings, state_dir, unique_group, *args)
    with running(first):
        fold_one()  # joined and folding
        killed_at = time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.wait(10)
    second = ProjectProcess(settings, state_dir, unique_group, *args)
    with running(second):
        fold_one()
        restart_to_fold = time.monotonic() - killed_at
        assert second.process.poll() is None, second.output()
    assert restart_to_fold < 15.0, second.output()
    assert "static member behest-" in " ".join(second.output().split())
