"""Operating behest: the projector's Prometheus metrics over HTTP, `/readyz` following the
projector's life, JSON logs, and Kafka clients' retry noise bounded while the broker is down.

Processes are the real CLI (`behest project`, `behest serve`, `behest simulate`) on the
real broker; the noise test stops a broker of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from test_projector_crash import behest_command, produce, stream, wait_until

from behest.config import Settings, project_home
from behest.local.broker import LocalBroker
from behest.local.ports import free_port


@contextmanager
def cli(
    settings: Settings, log: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`behest ARGS` with the test's broker, topic and state dir; killed on the way out."""
    environment = {
        **os.environ,
        "BEHEST_BOOTSTRAP_SERVERS": settings.bootstrap,
        "BEHEST_TOPIC": settings.topic,
        "BEHEST_STATE_DIR": str(settings.state_dir),
        **(env or {}),
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*behest_command(), *args], env=environment, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def scrape(url: str) -> dict[str, float]:
    """Every sample of a Prometheus text page, by its name and labels."""
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_projector_metrics_are_scraped_over_http(
    settings: Settings, bootstrap_servers: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "project.log"
    events = stream(21, runs=10, length=12)
    with cli(settings, log, "project", "--metrics-port", str(port), "--log-format", "json"):
        ends = produce(bootstrap_servers, settings.topic, events, chunk=40, pause=0.05)
        folded = "behest_projector_events_folded_total"

        def all_folded() -> bool:
            return scrape(url).get(folded) == len(events)

        wait_until(all_folded, 60, f"{len(events)} events folded per /metrics ({log})")
        wait_until(lambda: scrape(url).get("behest_projector_assigned_partitions") == 3, 10, "3")
        samples = scrape(url)
    topic = settings.topic
    for partition, end in ends.items():
        where = f'{{partition="{partition}",topic="{topic}"}}'
        assert samples[f"behest_projector_folded_offset{where}"] == end
        assert samples[f"behest_projector_lag_records{where}"] == 0
        assert samples[f"behest_projector_lag_seconds{where}"] == 0
    batches = samples["behest_projector_batches_total"]
    assert batches >= 1
    assert samples["behest_projector_batch_duration_seconds_count"] == batches
    assert samples['behest_projector_batch_duration_seconds_bucket{le="+Inf"}'] == batches
    assert samples['behest_projector_rebalances_total{event="assigned"}'] >= 1
    for name in ("dead_letters", "gaps", "duplicates", "late_repaired"):
        assert samples[f"behest_projector_{name}_total"] == 0
    lines = log.read_text().splitlines()
    assert lines and all(orjson.loads(line)["level"] for line in lines)  # JSON, every one
    assert any(f"metrics at {url}" in orjson.loads(line)["message"] for line in lines)


def test_readyz_flips_when_the_projector_is_killed_and_back_when_it_restarts(
    settings: Settings, bootstrap_servers: str, tmp_path: Path, unique_group: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "ops.log"

    def readiness() -> int:
        try:
            return httpx.get(f"{base}/readyz", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def becomes(status: int) -> Callable[[], bool]:
        return lambda: readiness() == status

    project = ("project", "--group-id", unique_group)
    produce(bootstrap_servers, settings.topic, stream(5, runs=3, length=5), chunk=15, pause=0)
    with cli(settings, log, *project) as projector:
        serve = ("serve", "--port", str(port), "--wait", "60")
        with cli(settings, log, *serve):
            wait_until(becomes(200), 60, f"/readyz 200 while the projector runs ({log})")
            assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
            projector.send_signal(signal.SIGKILL)
            projector.wait()
            killed = time.monotonic()
            wait_until(becomes(503), 20, f"/readyz 503 after the kill ({log})")
            assert time.monotonic() - killed < 15
            answer = httpx.get(f"{base}/readyz").json()
            assert "it died or hangs" in answer["reason"]
            health = httpx.get(f"{base}/healthz")
            assert health.status_code == 200 and health.json()["status"] == "degraded"
            metrics = scrape(f"{base}/metrics")
            assert metrics["behest_projector_up"] == 0 and metrics["behest_ready"] == 0
            with cli(settings, log, *project):
                wait_until(becomes(200), 60, f"/readyz 200 after the restart ({log})")
                metrics = scrape(f"{base}/metrics")
                assert metrics["behest_projector_up"] == 1
                lag = [v for k, v in metrics.items() if k.startswith("behest_projector_lag_rec")]
                assert lag and not any(lag)


@contextmanager
def own_broker() -> Iterator[tuple[LocalBroker, str]]:
    """A broker this test may stop (the session's is shared)."""
    data_dir = project_home() / f"test-noise-broker-{os.getpid()}"
    broker = LocalBroker(data_dir)
    try:
        status = broker.start(free_port())
        assert status.bootstrap is not None
        yield broker, status.bootstrap
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_kafka_retry_noise_is_bounded_while_the_broker_is_down(tmp_path: Path) -> None:
    """Before: `behest simulate` wrote ~45 lines a second (aiokafka's every reconnect)."""
    down_for = 8.0
    with own_broker() as (broker, bootstrap):
        topic = "noise"
        create_topics(bootstrap, topic)
        settings = Settings(bootstrap_servers=bootstrap, topic=topic, state_dir=tmp_path / "st")
        logs = {name: tmp_path / f"{name}.log" for name in ("project", "simulate")}
        simulate = ("simulate", "--runs", "100000", "--concurrency", "2", "--no-progress")
        with (
            cli(settings, logs["project"], "project"),
            cli(settings, logs["simulate"], *simulate) as producer,
        ):
            wait_until(lambda: broker_has_records(bootstrap, topic), 60, "traffic")
            before = {name: len(path.read_text().splitlines()) for name, path in logs.items()}
            broker.kill()
            time.sleep(down_for)
            assert producer.poll() is None, logs["simulate"].read_text()[-2000:]
            during = {
                name: path.read_text().splitlines()[before[name] :] for name, path in logs.items()
            }
    for name, lines in during.items():
        shown = "\n".join(lines[:40])
        assert len(lines) <= 25, f"{name}: {len(lines)} lines in {down_for:g} s:\n{shown}"
        kinds = [re.sub(r"\d+", "#", line) for line in lines]
        assert len(set(kinds)) == len(kinds), f"{name}: a line repeated:\n{shown}"


def create_topics(bootstrap: str, topic: str) -> None:
    """The topic and its dead-letter topic (the admin client goes before the broker does)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(name, num_partitions=2) for name in (topic, f"{topic}.dlq")]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result(timeout=30)


def broker_has_records(bootstrap: str, topic: str) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "noise-probe"})
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), 5)[1] for p in (0, 1)]
    except KafkaException:  # no leader yet
        return False
    finally:
        consumer.close()
    return sum(ends) > 1000
