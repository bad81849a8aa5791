"""Producer throughput: behest's two producers beside raw confluent-kafka, in one run.

    python -m benchmarks.bench_producer [seconds_budget]   (default 90, all included)

Sustained rate = events / (first produce call → last acknowledgement), `acks=all`,
idempotent, behest's batching and compression, all to the same 6-partition topic. The
raw reference produces the same events pre-encoded (no Avro, no futures, no callbacks),
so the ratio says what encoding and delivery tracking cost. The variants run interleaved
(raw, emit_many, emit, …) and each figure is the median of its repeats, so load from
anything else on the machine hits all of them alike.

Uses BEHEST_BOOTSTRAP_SERVERS, else starts a local broker (and stops it afterwards).
`run(bootstrap, seconds_budget)` returns the rows for the suite.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Producer

from behest import codec
from behest.admin import create_topics
from behest.config import Settings
from behest.emit.aio import AsyncEventProducer
from behest.emit.producer import PRODUCER_DEFAULTS, EventProducer
from behest.events import AgentEvent
from behest.local.simulate import _stamped_chunks, plan_runs

PARTITIONS = 6
CHUNK = 1_000
"""Events per `emit_many` call."""
TARGETS = {"emit_many": 0.5, "emit": 0.3}
"""The issue's target ratios to raw produce with a delivery callback per event."""
RAW = "raw confluent-kafka produce, pre-encoded"
RAW_CALLBACKS = "raw produce + a delivery callback per event (pre-encoded)"


def realistic_events(count: int, seed: int = 7) -> list[AgentEvent]:
    """`count` events of interleaved simulated runs (the mix `behest simulate` produces)."""
    events: list[AgentEvent] = []
    runs = max(1, count // 35)
    for chunk in _stamped_chunks(plan_runs(runs, seed), 32, seed):
        events.extend(chunk)
    while len(events) < count:  # the plan came up short: top up with a few more runs
        seed += 1
        for chunk in _stamped_chunks(plan_runs(max(1, runs // 10), seed), 32, seed):
            events.extend(chunk)
    return events[:count]


# --- one measurement each: events per second, first produce to last acknowledgement ----------


WARM_UP = uuid.UUID(int=0)
"""A run id whose tombstone each measurement sends (and waits for) before its clock starts,
so connecting and the idempotent producer's id request are not part of any figure."""


def raw_produce(settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> float:
    producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": settings.bootstrap})
    producer.produce(settings.topic, None, str(WARM_UP).encode())
    producer.flush(30)
    produce, poll, topic = producer.produce, producer.poll, settings.topic
    start = time.perf_counter()
    for key, value in records:
        try:
            produce(topic, value, key)
        except BufferError:
            poll(0.005)
            produce(topic, value, key)
    if producer.flush(120):
        raise RuntimeError("raw produce: events still pending after 120 s")
    return len(records) / (time.perf_counter() - start)


def raw_with_callbacks(settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> float:
    """Raw produce plus the least any producer must do to learn each event's fate: a Python
    delivery callback per event, served by a poll thread (what behest's producer does)."""
    producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": settings.bootstrap})
    producer.produce(settings.topic, None, str(WARM_UP).encode())
    producer.flush(30)
    done = itertools.count(1)
    stop = threading.Event()

    def on_delivery(_error: object, _message: object) -> None:
        next(done)

    def serve() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    poller = threading.Thread(target=serve, daemon=True)
    poller.start()
    produce, poll, topic = producer.produce, producer.poll, settings.topic
    start = time.perf_counter()
    for key, value in records:
        try:
            produce(topic, value, key, on_delivery=on_delivery)
        except BufferError:
            poll(0.005)
            produce(topic, value, key, on_delivery=on_delivery)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - start
    stop.set()
    poller.join()
    if remaining:
        raise RuntimeError("raw produce: events still pending after 120 s")
    return len(records) / elapsed


def encode_only(_settings: Settings, events: Sequence[AgentEvent]) -> float:
    """`codec.encode` alone, no Kafka: the ceiling of any producer that encodes in Python."""
    encode = codec.encode
    start = time.perf_counter()
    for event in events:
        encode(event)
    return len(events) / (time.perf_counter() - start)


def sync_many(settings: Settings, events: Sequence[AgentEvent]) -> float:
    with EventProducer(settings) as producer:
        producer.emit_tombstone(WARM_UP).result(timeout=30)
        start = time.perf_counter()
        futures = [producer.emit_many(events[i : i + CHUNK]) for i in range(0, len(events), CHUNK)]
        for future in futures:
            future.result(timeout=120)
        return len(events) / (time.perf_counter() - start)


def sync_single(settings: Settings, events: Sequence[AgentEvent]) -> float:
    with EventProducer(settings) as producer:
        producer.emit_tombstone(WARM_UP).result(timeout=30)
        start = time.perf_counter()
        futures = [producer.emit(event) for event in events]
        for future in futures:
            future.result(timeout=120)
        return len(events) / (time.perf_counter() - start)


async def _async_many(settings: Settings, events: Sequence[AgentEvent]) -> float:
    async with AsyncEventProducer(settings) as producer:
        await producer.emit_tombstone(WARM_UP)
        start = time.perf_counter()
        futures = [producer.emit_many(events[i : i + CHUNK]) for i in range(0, len(events), CHUNK)]
        await asyncio.gather(*futures)
        return len(events) / (time.perf_counter() - start)


async def _async_single(settings: Settings, events: Sequence[AgentEvent]) -> float:
    async with AsyncEventProducer(settings) as producer:
        await producer.emit_tombstone(WARM_UP)
        start = time.perf_counter()
        await asyncio.gather(*[producer.emit(event) for event in events])
        return len(events) / (time.perf_counter() - start)


def async_many(settings: Settings, events: Sequence[AgentEvent]) -> float:
    return asyncio.run(_async_many(settings, events))


def async_single(settings: Settings, events: Sequence[AgentEvent]) -> float:
    return asyncio.run(_async_single(settings, events))


# --- the table --------------------------------------------------------------------------------


def _row(
    name: str, value: float, reference: str | None, reference_value: float | None
) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "unit": "events/s",
        "reference": reference,
        "reference_value": reference_value,
        "ratio": value / reference_value if reference_value else None,
    }


def run(
    bootstrap: str, seconds_budget: float = 90.0, repeats: int = 3, quick: bool = False
) -> list[dict[str, Any]]:
    """Measure every variant `repeats` times (interleaved) within about `seconds_budget`
    (30 s at most when `quick`)."""
    if quick:
        seconds_budget = min(seconds_budget, 30.0)
    deadline = time.monotonic() + seconds_budget
    settings = Settings(bootstrap_servers=bootstrap, topic=f"bench-producer-{uuid.uuid4().hex[:8]}")
    create_topics(settings, partitions=PARTITIONS)
    # Size the runs from a short raw calibration, so every variant fits the budget.
    events = realistic_events(60_000)
    records = [(str(e.run_id).encode(), codec.encode(e)) for e in events]
    # The prepared events are test data, not workload: keep the collector from rescanning
    # them (a service emits and forgets; it does not hold 60k events).
    gc.collect()
    gc.freeze()
    calibration = raw_produce(settings, records[:20_000])
    variants: list[tuple[str, Callable[[Settings, Any], float], bool]] = [
        (RAW, raw_produce, True),
        (RAW_CALLBACKS, raw_with_callbacks, True),
        ("codec.encode alone, no Kafka (the encoding ceiling)", encode_only, False),
        ("EventProducer.emit_many (confluent-kafka)", sync_many, False),
        ("EventProducer.emit (confluent-kafka)", sync_single, False),
        ("AsyncEventProducer.emit_many (aiokafka)", async_many, False),
        ("AsyncEventProducer.emit (aiokafka)", async_single, False),
    ]
    # A repeat of all variants takes about 14x one raw measurement (emit per event is the
    # slowest); aim at ~2 s per raw measurement, within 80% of what is left of the budget.
    remaining = deadline - time.monotonic()
    fitting = 0.8 * remaining * calibration / (14 * repeats)
    count = int(min(2 * calibration, fitting, 2 * len(events)))
    count = max(count, 5_000)
    events, records = (events * 2)[:count], (records * 2)[:count]
    results: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(repeats):
        for name, measure, raw in variants:
            if time.monotonic() > deadline and results[name]:
                continue  # out of budget: keep what was measured
            results[name].append(measure(settings, records if raw else events))
    raw_rate = statistics.median(results[RAW])
    callbacks_rate = statistics.median(results[RAW_CALLBACKS])
    rows = [
        _row(f"{RAW} ({count:,} events)", raw_rate, None, None),
        _row(RAW_CALLBACKS, callbacks_rate, RAW, raw_rate),
    ]
    # The producers' reference is raw produce with a callback per event: the least any
    # producer must do to learn each event's fate (the target ratios are to it).
    for name, _, _ in variants[2:]:
        rows.append(_row(name, statistics.median(results[name]), RAW_CALLBACKS, callbacks_rate))
    _drop(settings)
    gc.unfreeze()
    return rows


def _drop(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    for future in admin.delete_topics([settings.topic, settings.dlq_topic]).values():
        try:
            future.result(timeout=30)
        except Exception:  # noqa: S112 - best effort on a scratch topic
            continue


def main(argv: Sequence[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from benchmarks.common import kafka_broker

    budget = float(argv[0]) if argv else 90.0
    console = Console()
    started = time.monotonic()
    with kafka_broker(progress=console.print) as (bootstrap, description):
        # The budget covers everything, a broker's start-up and shutdown included.
        left = budget - (time.monotonic() - started) - 10.0
        rows = run(bootstrap, seconds_budget=max(left, 15.0))
    table = Table("producer", "events/s", "reference", "ratio", title=f"producer on {description}")
    for row in rows:
        ratio = row["ratio"]
        table.add_row(
            row["name"],
            f"{row['value']:,.0f}",
            f"{row['reference_value']:,.0f}" if row["reference_value"] else "—",
            f"{ratio:.0%}" if ratio is not None else "—",
        )
    console.print(table)
    for row in rows[2:]:
        kind = (
            "emit_many"
            if ".emit_many" in row["name"]
            else "emit"
            if ".emit " in row["name"]
            else None
        )
        if kind is not None:
            console.print(
                f"{row['name']}: {row['ratio']:.2f}x of raw + callbacks "
                f"(target ≥ {TARGETS[kind]:.1f}x)"
            )
    console.print(f"({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
