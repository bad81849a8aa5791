"""Scale-out without wrong answers: issue 13's "done when", on one machine, bounded.

A local three-broker cluster, a 6-partition topic (replication 3), three `behest node`
processes (`--workers 1`, 6 s session timeout). Runs are produced continuously while
nodes are SIGKILLed and restarted, a fourth joins, one leaves with SIGTERM, and a broker
is SIGKILLed and restarted; meanwhile readers ask random live nodes. Asserted:

- no 5xx but 503 with Retry-After;
- every 200 is the fold of a prefix of that run's acknowledged events, and never older
  than what the same reader saw after a read-your-writes wait;
- after the stream ends, every node answers every run's final state exactly, and batch
  and listings are complete from every node.

It also measures the time from SIGKILL of a partition's owner until another node serves
that partition's runs current (no standby), and prints it.

A read older than a completed read-your-writes wait names the nodes that answered the
wait and the read (`X-Behest-Node`), and when.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from behest.admin import create_topics
from behest.client import RunStateClient
from behest.codec import decode_record, encode
from behest.config import Settings, project_home
from behest.emit.delivery import Delivery
from behest.emit.partitioner import partition_for
from behest.emit.producer import EventProducer
from behest.errors import QueryError
from behest.events import AgentEvent
from behest.fold.projection import fold
from behest.local.cluster import LocalCluster
from behest.projections.run_state import RunStateProjection
from behest.testing import sample_run
from tests.integration.cluster_nodes import NodeProcess, wait_until_serving

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17+")

PARTITIONS = 6
PROJECTION = RunStateProjection()
RUNS = 60
EVENTS_PER_RUN = 24


def _prefix_states(events: list[AgentEvent]) -> list[dict[str, Any]]:
    """The state after each prefix of a run's events (index k: events 0..k)."""
    records = [decode_record(encode(e)) for e in events]
    states = []
    for k in range(len(records)):
        state = fold(PROJECTION, records[: k + 1])
        assert state is not None
        states.append(orjson.loads(PROJECTION.encode_state(state)))
    return states


@dataclass
class Traffic:
    """Runs produced so far: what was acknowledged, per run, in order."""

    runs: dict[str, list[AgentEvent]]
    states: dict[str, list[dict[str, Any]]]
    acked: dict[str, int] = field(default_factory=dict)
    """Run -> number of its events acknowledged (acks=all)."""
    last: dict[str, Delivery] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def produce(self, settings: Settings, stop: threading.Event) -> None:
        """Interleave the runs' events, a few per tick, until all are sent or `stop`."""
        order = [(run, k) for k in range(EVENTS_PER_RUN) for run in self.runs]
        try:
            with EventProducer(settings) as producer:
                for run, k in order:
                    if stop.is_set():
                        break
                    delivery = producer.emit(self.runs[run][k]).result(timeout=60)
                    with self.lock:
                        self.acked[run] = k + 1
                        self.last[run] = delivery
                    time.sleep(0.04)
        except Exception as error:  # surfaced by the test, not lost in a thread
            self.errors.append(repr(error))
        finally:
            self.done.set()


@dataclass
class Reader:
    """Random reads against random live nodes, checking every answer."""

    traffic: Traffic
    nodes: list[NodeProcess]
    seed: int
    floors: dict[str, int] = field(default_factory=dict)
    """Run -> the sequence this reader saw after a read-your-writes wait."""
    statuses: dict[int, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    behind_a_wait: list[str] = field(default_factory=list)
    """Reads older than what this reader saw after a read-your-writes wait."""
    waits_timed_out: int = 0

    def run(self, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        with httpx.Client(timeout=20) as http:
            while not stop.is_set():
                live = [n for n in self.nodes if n.alive()]
                with self.traffic.lock:
                    started = [r for r, n in self.traffic.acked.items() if n]
                if not live or not started:
                    time.sleep(0.05)
                    continue
                node, run = rng.choice(live), rng.choice(started)
                if rng.random() < 0.1:
                    self._read_your_write(http, node, run)
                else:
                    self._read(http, node, run)

    def _read(self, http: httpx.Client, node: NodeProcess, run: str) -> None:
        try:
            answer = http.get(f"{node.url}/runs/{run}")
        except httpx.HTTPError:
            return  # the node was killed under us
        self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1
        if answer.status_code >= 500:
            if answer.status_code != 503 or "retry-after" not in answer.headers:
                self.violations.append(f"{answer.status_code} from {node.url}: {answer.text}")
            return
        if answer.status_code != 200:
            return
        state = answer.json()
        prefixes = self.traffic.states[run]
        sequence = state.get("sequence", -1)
        if not 0 <= sequence < len(prefixes) or prefixes[sequence] != state:
            self.violations.append(f"{node.url} answered {run} with a state no prefix folds to")
        elif sequence < self.floors.get(run, -1):
            self.behind_a_wait.append(
                f"{_clock()} {node.url} answered {run} at sequence {sequence} from "
                f"{answer.headers.get('x-behest-node')}, older than the "
                f"{self.floors[run]} this reader saw after waiting for its write"
            )

    def _read_your_write(self, http: httpx.Client, node: NodeProcess, run: str) -> None:
        """Wait for the run's latest acknowledged write, then read it (503s retried, as
        `RunStateClient` does); both answers name the node that gave them."""
        with self.traffic.lock:
            delivery, acked = self.traffic.last[run], self.traffic.acked[run]
        deadline = time.monotonic() + 10
        params = {"partition": delivery.partition, "offset": delivery.offset, "timeout": 10}
        waited = _answered(http, f"{node.url}/wait", params, deadline)
        answer = None if waited is None else _answered(http, f"{node.url}/runs/{run}", {}, deadline)
        if waited is None or answer is None:
            self.waits_timed_out += 1  # no owner for long enough: no answer, not a wrong one
            return
        for reply in (waited, answer):
            if reply.status_code != 200:
                self.violations.append(f"{reply.status_code} from {node.url}: {reply.text}")
                return
        sequence = answer.json()["sequence"]
        if sequence < acked - 1:
            self.behind_a_wait.append(
                f"{_clock()} {node.url} answered {run} (partition {delivery.partition}) at "
                f"{sequence} from {answer.headers.get('x-behest-node')} after waiting for "
                f"{acked - 1} (offset {delivery.offset}) on {waited.headers.get('x-behest-node')}"
            )
        self.floors[run] = max(self.floors.get(run, -1), sequence)


def _answered(
    http: httpx.Client, url: str, params: dict[str, int], deadline: float
) -> httpx.Response | None:
    """The first answer that is not a 503 before `deadline` (None: none, or no node)."""
    while time.monotonic() < deadline:
        try:
            answer = http.get(url, params=params)
        except httpx.HTTPError:
            return None
        if answer.status_code != 503:
            return answer
        time.sleep(0.1)
    return None


def _clock() -> str:
    return time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"


def _owner_of(nodes: list[NodeProcess], partition: int) -> NodeProcess | None:
    with httpx.Client() as http:
        for node in nodes:
            view = node.cluster(http) if node.alive() else None
            if view is not None:
                url = view["owners"].get(str(partition))
                return next((n for n in nodes if n.url == url), None)
    return None


def _takeover_seconds(
    nodes: list[NodeProcess], traffic: Traffic, partition: int, timeout: float = 60.0
) -> float:
    """SIGKILL the owner of `partition`; seconds until another node serves its runs current
    (read-your-writes on the latest acknowledged write of one of its runs)."""
    owner = _owner_of(nodes, partition)
    assert owner is not None
    other = next(n for n in nodes if n is not owner and n.alive())
    with traffic.lock:
        run = next(r for r in traffic.acked if partition_for(r, PARTITIONS) == partition)
    owner.kill()
    killed = time.monotonic()
    with RunStateClient(other.url, retry_for=0.2) as client:
        while time.monotonic() - killed < timeout:
            with traffic.lock:
                delivery, acked = traffic.last[run], traffic.acked[run]
            try:
                client.wait_for(delivery, timeout=0.5)
                state = client.raw.get(run)
            except QueryError:
                time.sleep(0.1)
                continue
            assert state is not None and orjson.loads(state)["sequence"] >= acked - 1
            return time.monotonic() - killed
    with httpx.Client() as http:
        views = {n.name: n.cluster(http) for n in nodes if n.alive()}
    logs = "\n".join(f"--- {n.name} ({n.url}):\n{n.log_tail()}" for n in nodes)
    raise AssertionError(
        f"partition {partition} was not served again within {timeout} s after SIGKILL of "
        f"{owner.name} ({owner.url}); the live nodes' views: {views}\n{logs}"
    )


@pytest.fixture
def node_dirs() -> Iterator[Path]:
    """The nodes' state dirs and logs, under .cache/ (kept with BEHEST_KEEP_TEST_LOGS=1)."""
    folder = project_home() / f"test-scale-out-nodes-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    yield folder
    if not os.environ.get("BEHEST_KEEP_TEST_LOGS"):
        shutil.rmtree(folder, ignore_errors=True)


def test_any_node_answers_any_run_through_node_and_broker_failures(
    kafka_cluster: LocalCluster, node_dirs: Path
) -> None:
    tmp_path = node_dirs
    bootstrap = kafka_cluster.status().bootstrap
    assert bootstrap is not None
    topic = f"scale-{uuid.uuid4().hex[:8]}"
    settings = Settings(bootstrap_servers=bootstrap, topic=topic)
    assert [r.replication for r in create_topics(settings, partitions=PARTITIONS)] == [3, 3, 3]
    group = f"g-{topic}"
    nodes = [
        NodeProcess(f"node{i}", bootstrap, topic, group, tmp_path / f"node{i}").start()
        for i in range(3)
    ]
    runs = {
        str(e[0].run_id): e
        for e in (sample_run(events=EVENTS_PER_RUN, seed=n) for n in range(RUNS))
    }
    traffic = Traffic(
        runs={r: e[:EVENTS_PER_RUN] for r, e in runs.items()},
        states={r: _prefix_states(e[:EVENTS_PER_RUN]) for r, e in runs.items()},
    )
    stop = threading.Event()
    readers = [Reader(traffic, nodes, seed) for seed in range(2)]
    threads = [threading.Thread(target=traffic.produce, args=(settings, stop), daemon=True)]
    threads += [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in readers]
    try:
        _exercise(kafka_cluster, nodes, traffic, threads, stop, bootstrap, topic, group, tmp_path)
        _check(nodes, traffic, readers)
    finally:
        for node in nodes:
            node.stop()


def _exercise(
    kafka_cluster: LocalCluster,
    nodes: list[NodeProcess],
    traffic: Traffic,
    threads: list[threading.Thread],
    stop: threading.Event,
    bootstrap: str,
    topic: str,
    group: str,
    tmp_path: Path,
) -> None:
    """Traffic and readers running while nodes and a broker fail, join and leave."""
    rng = random.Random(13)
    try:
        with httpx.Client() as http:
            wait_until_serving(nodes, PARTITIONS, http)
        for thread in threads:
            thread.start()
        time.sleep(3)
        for _ in range(2):  # SIGKILL a random node, restart it (same state dir, same member)
            victim = rng.choice(nodes)
            victim.kill()
            time.sleep(rng.uniform(1, 4))
            victim.start()
            time.sleep(4)
        joined = NodeProcess("node3", bootstrap, topic, group, tmp_path / "node3").start()
        nodes.append(joined)  # one joins ...
        time.sleep(6)
        nodes[1].stop()  # ... and one leaves with SIGTERM
        time.sleep(3)
        kafka_cluster.kill_node(2)  # a broker dies under load, and comes back
        time.sleep(5)
        kafka_cluster.start_node(2, timeout=90)
        live = [n for n in nodes if n.alive()]
        with httpx.Client() as http:
            wait_until_serving(live, PARTITIONS, http)
        takeover = _takeover_seconds(live, traffic, partition=0)
        print(f"\nscale-out: takeover after SIGKILL (6 s session, no standby) {takeover:.1f} s")
        traffic.done.wait(120)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def _check(nodes: list[NodeProcess], traffic: Traffic, readers: list[Reader]) -> None:
    """The assertions of the module docstring, once the stream ended."""
    assert traffic.errors == []
    live = [n for n in nodes if n.alive()]
    with httpx.Client() as http:
        wait_until_serving(live, PARTITIONS, http)
    for node in live:
        _check_final(node, traffic)
    for reader in readers:
        assert reader.violations == []
    statuses: dict[int, int] = {}
    for reader in readers:
        for status, count in reader.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    assert set(statuses) <= {200, 404, 503}, statuses
    assert statuses.get(200, 0) > 100
    print(
        f"scale-out: answers {statuses}; read-your-writes waits that gave up: "
        f"{sum(r.waits_timed_out for r in readers)}"
    )
    assert [v for r in readers for v in r.behind_a_wait] == []


def _check_final(node: NodeProcess, traffic: Traffic) -> None:
    """Every run's final state, a batch of all of them, and a full listing, from `node`."""
    with RunStateClient(node.url, retry_for=30) as client:
        for delivery in traffic.last.values():
            client.wait_for(delivery, timeout=30)
        final = {run: traffic.states[run][traffic.acked[run] - 1] for run in traffic.acked}
        for run, state in final.items():
            answer = client.raw.get(run)
            assert answer is not None and orjson.loads(answer) == state, (node.url, run)
        batch = client.raw.get_many(list(final))
        assert {r: orjson.loads(s) if s else None for r, s in batch.items()} == {
            uuid.UUID(r): s for r, s in final.items()
        }
        listed: list[str] = []
        cursor = None
        while True:
            page, cursor = client.raw.list_runs(limit=25, cursor=cursor)
            listed += [orjson.loads(s)["run_id"] for s in page]
            if cursor is None:
                break
        assert sorted(listed) == sorted(final), node.url
