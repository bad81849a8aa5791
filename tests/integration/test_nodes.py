"""`behest node` on one machine: any node answers any run, through a node's crash.

Three node processes (`--workers 1`, 6 s session timeout) share a 6-partition topic of the
session's broker. Each answer is checked against the plain fold of what was produced.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from behest.client import RunStateClient
from behest.codec import decode_record, encode
from behest.config import Settings
from behest.emit.partitioner import partition_for
from behest.emit.producer import EventProducer
from behest.events import AgentEvent
from behest.fold.projection import fold
from behest.projections.run_state import RunStateProjection
from behest.testing import sample_run
from tests.integration.cluster_nodes import NodeProcess, wait_until_serving

PARTITIONS = 6
PROJECTION = RunStateProjection()


def expected(events: list[AgentEvent]) -> dict[str, Any]:
    state = fold(PROJECTION, [decode_record(encode(e)) for e in events])
    assert state is not None
    return orjson.loads(PROJECTION.encode_state(state))  # type: ignore[no-any-return]


@pytest.fixture
def nodes(
    bootstrap_servers: str, make_topic: Callable[..., str], unique_group: str, tmp_path: Path
) -> Iterator[list[NodeProcess]]:
    topic = make_topic(partitions=PARTITIONS)
    make_topic(f"{topic}.dlq", partitions=PARTITIONS)
    started = [
        NodeProcess(
            f"node{i}", bootstrap_servers, topic, unique_group, tmp_path / f"node{i}"
        ).start()
        for i in range(3)
    ]
    try:
        with httpx.Client() as client:
            wait_until_serving(started, PARTITIONS, client)
        yield started
    finally:
        for node in started:
            node.stop()


def _produce(settings: Settings, runs: list[list[AgentEvent]]) -> dict[int, Any]:
    """Produce every run; the last delivery per partition."""
    last: dict[int, Any] = {}
    with EventProducer(settings) as producer:
        futures = [producer.emit(event) for events in runs for event in events]
        for future in futures:
            delivery = future.result(timeout=60)
            last[delivery.partition] = delivery
    return last


def test_every_node_answers_every_run_batch_and_listing(
    nodes: list[NodeProcess], bootstrap_servers: str
) -> None:
    settings = Settings(bootstrap_servers=bootstrap_servers, topic=nodes[0].topic)
    runs = [sample_run(events=12, seed=n) for n in range(24)]
    last = _produce(settings, runs)
    ids = [str(events[0].run_id) for events in runs]
    states = {str(events[0].run_id): expected(events) for events in runs}

    for node in nodes:
        with RunStateClient(node.url) as client:
            for delivery in last.values():  # read your writes, from whichever node
                client.wait_for(delivery, timeout=60)
            for run_id in ids:
                answer = client.raw.get(run_id)
                assert answer is not None and orjson.loads(answer) == states[run_id]
            found = client.raw.get_many(ids)
            assert [orjson.loads(s) if s else None for s in found.values()] == [
                states[r] for r in ids
            ]
            listed, cursor = [], None
            while True:
                page, cursor = client.raw.list_runs(limit=5, cursor=cursor)
                listed += [orjson.loads(s)["run_id"] for s in page]
                if cursor is None:
                    break
            assert sorted(listed) == sorted(ids) and len(listed) == len(ids)
            events = client.list_events(ids[3])
            assert events == runs[3]


def test_a_killed_owners_runs_are_served_by_another_node(
    nodes: list[NodeProcess], bootstrap_servers: str
) -> None:
    settings = Settings(bootstrap_servers=bootstrap_servers, topic=nodes[0].topic)
    runs = [sample_run(events=10, seed=100 + n) for n in range(18)]
    last = _produce(settings, runs)
    with RunStateClient(nodes[0].url) as client:
        for delivery in last.values():
            client.wait_for(delivery, timeout=60)
    with httpx.Client() as http:
        view = nodes[0].cluster(http)
        assert view is not None
        victim = next(n for n in nodes if n.url in view["owners"].values())
        lost = {int(p) for p, url in view["owners"].items() if url == victim.url}
        victims_runs = [e for e in runs if partition_for(str(e[0].run_id), PARTITIONS) in lost]
        assert victims_runs
        victim.kill()
        killed_at = time.monotonic()
        survivor = next(n for n in nodes if n is not victim)
        statuses: dict[int, int] = {}
        pending = {str(e[0].run_id): expected(e) for e in victims_runs}
        while pending and time.monotonic() - killed_at < 60:
            for run_id, state in list(pending.items()):
                answer = http.get(f"{survivor.url}/runs/{run_id}", timeout=15)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 503:
                    assert answer.headers["retry-after"]
                    continue
                assert answer.status_code == 200, answer.text
                assert answer.json() == state  # never a stale state as current
                del pending[run_id]
            time.sleep(0.1)
        took = time.monotonic() - killed_at
    assert not pending, f"still not served after {took:.1f} s: {statuses}"
    assert set(statuses) <= {200, 503}
    print(f"\ntakeover (SIGKILL, 6 s session, no standby): {took:.1f} s; answers {statuses}")


def test_a_split_deployment_is_a_node_too(
    bootstrap_servers: str, make_topic: Callable[..., str], unique_group: str, tmp_path: Path
) -> None:
    """`behest project --advertise URL` + `behest serve --advertise URL`, beside a node."""
    topic = make_topic(partitions=PARTITIONS)
    make_topic(f"{topic}.dlq", partitions=PARTITIONS)
    full = NodeProcess("full", bootstrap_servers, topic, unique_group, tmp_path / "full")
    split = NodeProcess("split", bootstrap_servers, topic, unique_group, tmp_path / "split")
    common = [
        "--bootstrap-servers", bootstrap_servers, "--topic", topic,
        "--state-dir", str(split.state_dir), "--group-id", unique_group,
        "--advertise", split.url,
    ]  # fmt: skip
    behest = [sys.executable, "-m", "behest.cli"]
    processes = [
        subprocess.Popen([*behest, "project", "--session-timeout", "6", *common]),
        subprocess.Popen([*behest, "serve", "--port", str(split.port), "--wait", "60", *common]),
    ]
    full.start()
    try:
        settings = Settings(bootstrap_servers=bootstrap_servers, topic=topic)
        runs = [sample_run(events=8, seed=200 + n) for n in range(12)]
        last = _produce(settings, runs)
        with httpx.Client() as http:
            wait_until_serving([full, split], PARTITIONS, http)
        for url in (full.url, split.url):
            with RunStateClient(url) as client:
                for delivery in last.values():
                    client.wait_for(delivery, timeout=60)
                for events in runs:
                    answer = client.raw.get(events[0].run_id)
                    assert answer is not None and orjson.loads(answer) == expected(events)
    finally:
        full.stop()
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(40)


def _gathered_from_a_standby(
    http: httpx.Client, url: str, runs: list[list[AgentEvent]]
) -> set[str]:
    """A batch of every run and a listing of them all from `url`: complete and exact, or a
    503; which of them were answered from a standby copy (flagged stale)."""
    flagged = set()
    ids = [str(run[0].run_id) for run in runs]
    batch = http.post(f"{url}/runs/batch", json={"run_ids": ids}, timeout=15)
    listing = http.get(f"{url}/runs", params={"limit": 100}, timeout=15)
    for name, answer in (("batch", batch), ("listing", listing)):
        if answer.status_code == 503:
            assert answer.headers["retry-after"]
            continue
        assert answer.status_code == 200, answer.text
        assert sorted(s["run_id"] for s in answer.json()["runs"]) == sorted(ids), name
        if answer.headers.get("x-behest-stale") == "true":
            assert int(answer.headers["x-behest-lag-records"]) >= 0
            flagged.add(name)
    if batch.status_code == 200:
        assert batch.json()["runs"] == [expected(run) for run in runs]
    return flagged


def test_a_standby_answers_flagged_while_the_owner_is_gone(
    bootstrap_servers: str, make_topic: Callable[..., str], unique_group: str, tmp_path: Path
) -> None:
    topic = make_topic(partitions=PARTITIONS)
    make_topic(f"{topic}.dlq", partitions=PARTITIONS)
    nodes = [
        NodeProcess(
            f"node{i}", bootstrap_servers, topic, unique_group, tmp_path / f"node{i}",
            standby_replicas=1,
        ).start()
        for i in range(3)
    ]  # fmt: skip
    try:
        settings = Settings(bootstrap_servers=bootstrap_servers, topic=topic)
        runs = [sample_run(events=10, seed=300 + n) for n in range(18)]
        last = _produce(settings, runs)
        with httpx.Client() as http:
            wait_until_serving(nodes, PARTITIONS, http)
            with RunStateClient(nodes[0].url) as client:
                for delivery in last.values():
                    client.wait_for(delivery, timeout=60)
            run = runs[0]
            partition = partition_for(str(run[0].run_id), PARTITIONS)
            time.sleep(2)  # the copies catch up (each was at the log's end once)
            for _ in range(50):  # the views agree on the owner and the standby (no rebalance)
                views = [n.cluster(http) for n in nodes]
                pairs = {
                    (v["owners"].get(str(partition)), tuple(v["standbys"].get(str(partition), ())))
                    for v in views
                    if v is not None
                }
                if len(pairs) == 1 and None not in views:
                    break
                time.sleep(0.2)
            ((owner_url, (standby_url,)),) = pairs
            owner = next(n for n in nodes if n.url == owner_url)
            standby = next(n for n in nodes if n.url == standby_url)
            other = next(n for n in nodes if n not in (owner, standby))
            owner.kill()
            killed = time.monotonic()
            stale = current = None
            flagged: set[str] = set()
            while current is None and time.monotonic() - killed < 60:
                flagged |= _gathered_from_a_standby(http, other.url, runs)
                answer = http.get(f"{standby.url}/runs/{run[0].run_id}", timeout=15)
                if answer.status_code == 503:
                    assert answer.headers["retry-after"]
                else:
                    assert answer.status_code == 200, answer.text
                    assert answer.json() == expected(run)
                    if answer.headers.get("x-behest-stale") == "true":
                        assert int(answer.headers["x-behest-lag-records"]) >= 0
                        assert float(answer.headers["x-behest-lag-seconds"]) >= 0
                        stale = stale or time.monotonic() - killed
                    else:
                        current = time.monotonic() - killed
                time.sleep(0.1)
        assert stale is not None and current is not None, (stale, current)
        assert flagged == {"batch", "listing"}, flagged
        print(
            f"\nwith a standby: flagged stale answers after {stale:.1f} s, "
            f"current after {current:.1f} s"
        )
    finally:
        for node in nodes:
            node.stop()


def test_watching_all_runs_on_one_node_sees_every_nodes_runs(
    nodes: list[NodeProcess], bootstrap_servers: str
) -> None:
    settings = Settings(bootstrap_servers=bootstrap_servers, topic=nodes[0].topic)
    watcher = nodes[0]
    with httpx.Client() as http:
        view = watcher.cluster(http)
    assert view is not None
    others = {int(p) for p, url in view["owners"].items() if url != watcher.url}
    runs = [sample_run(events=6, seed=400 + n) for n in range(40)]
    elsewhere = [r for r in runs if partition_for(str(r[0].run_id), PARTITIONS) in others][:3]
    wanted = {str(r[0].run_id) for r in elsewhere}
    seen: set[str] = set()
    timeout = httpx.Timeout(5.0, read=30.0)
    with (
        httpx.Client(timeout=timeout) as http,
        http.stream("GET", f"{watcher.url}/runs/watch") as feed,
    ):
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/event-stream")
        lines = feed.iter_lines()
        assert next(lines).startswith("retry:")  # every node watches from here on
        _produce(settings, elsewhere)
        deadline = time.monotonic() + 30
        for line in lines:
            if line.startswith("data: "):
                seen.add(orjson.loads(line[len("data: ") :])["run_id"])
            if wanted <= seen or time.monotonic() > deadline:
                break
    assert wanted <= seen
