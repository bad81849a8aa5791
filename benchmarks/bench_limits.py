"""The raw limits behest's figures are measured against: what the libraries do alone.

- consume: confluent-kafka reading a topic, touching only the value bytes (no decode);
- produce: confluent-kafka writing pre-encoded events with behest's producer settings;
- rocksdict: `WriteBatch` puts per second, point-get and multi-get latency.

A projector or producer cannot beat these on the same machine; the ratio to them says how
much of the ceiling behest reaches.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from typing import Any

from confluent_kafka import Consumer, Producer
from rocksdict import Options, Rdict, WriteBatch

from behest.emit.producer import PRODUCER_DEFAULTS
from benchmarks.common import (
    BenchContext,
    ChildResult,
    Row,
    RunBatch,
    child_main,
    create_topic,
    delete_topic,
    iter_encoded,
    make_row,
    median,
    run_child,
)

CONSUME_BATCH = 2000
"""Messages per `consume()` call: the projector's own default batch size."""


# --- consume (in a child process) ---------------------------------------------------------------


def _consume(args: dict[str, Any]) -> dict[str, Any]:
    """Read `count` messages of a topic from the start, as a fresh consumer group member."""
    consumer = Consumer(
        {
            "bootstrap.servers": args["bootstrap"],
            "group.id": args["group"],
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    wanted = int(args["count"])
    seen = 0
    size = 0
    start = time.perf_counter()
    consumer.subscribe([args["topic"]])
    while seen < wanted:
        for message in consumer.consume(num_messages=CONSUME_BATCH, timeout=1.0):
            if message.error() is None:
                seen += 1
                size += len(message.value())
    elapsed = time.perf_counter() - start
    consumer.close()
    return {"seconds": elapsed, "messages": seen, "bytes": size}


def consume_once(ctx: BenchContext, topic: str, count: int) -> ChildResult:
    """One raw consume of `count` messages of `topic` in a fresh process and group."""
    args = {"bootstrap": ctx.bootstrap, "topic": topic, "count": count, "group": ctx.unique("raw")}
    return run_child("benchmarks.bench_limits", "consume", args)


# --- produce --------------------------------------------------------------------------------


def produce_rate(ctx: BenchContext, records: list[tuple[bytes, bytes]]) -> float:
    """Events/s of producing already-encoded records to a new topic, flush included."""
    topic = ctx.unique("raw-produce")
    create_topic(ctx.bootstrap, topic)
    config = {"bootstrap.servers": ctx.bootstrap, **PRODUCER_DEFAULTS}
    producer = Producer(config)
    try:
        # warm: connection, metadata and producer id are set-up, not throughput
        producer.produce(topic, records[0][1], records[0][0])
        producer.flush(30)
        start = time.perf_counter()
        for count, (key, value) in enumerate(records, 1):
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.005)
            if count % 1000 == 0:
                producer.poll(0)
        if producer.flush(120):
            raise RuntimeError(f"raw produce to {topic}: messages still pending after 120 s")
        return len(records) / (time.perf_counter() - start)
    finally:
        delete_topic(ctx.bootstrap, topic)


# --- rocksdict ------------------------------------------------------------------------------


def _rocks_options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return options


def rocks_put_rate(values: list[tuple[bytes, bytes]], per_batch: int = 1000) -> float:
    """Puts/s through `WriteBatch`es of `per_batch` puts, into a fresh database."""
    path = tempfile.mkdtemp(prefix="behest-bench-rocks-")
    db = Rdict(path, _rocks_options())
    try:
        start = time.perf_counter()
        for first in range(0, len(values), per_batch):
            batch = WriteBatch(raw_mode=True)
            for key, value in values[first : first + per_batch]:
                batch.put(key, value)
            db.write(batch)
        return len(values) / (time.perf_counter() - start)
    finally:
        db.close()
        shutil.rmtree(path, ignore_errors=True)


def rocks_get_latencies(
    values: list[tuple[bytes, bytes]], gets: int, rng: random.Random
) -> tuple[float, float]:
    """Mean seconds of one `get` and of one 1,000-key multi-get, on a populated database."""
    path = tempfile.mkdtemp(prefix="behest-bench-rocks-")
    db = Rdict(path, _rocks_options())
    try:
        for first in range(0, len(values), 1000):
            batch = WriteBatch(raw_mode=True)
            for key, value in values[first : first + 1000]:
                batch.put(key, value)
            db.write(batch)
        db.flush()
        keys = [key for key, _ in values]
        probes = [rng.choice(keys) for _ in range(gets)]
        get = db.get
        start = time.perf_counter()
        for key in probes:
            get(key)
        single = (time.perf_counter() - start) / gets
        groups: list[Any] = [rng.sample(keys, 1000) for _ in range(max(10, gets // 10_000))]
        start = time.perf_counter()
        for group in groups:
            get(group)
        multi = (time.perf_counter() - start) / len(groups)
        return single, multi
    finally:
        db.close()
        shutil.rmtree(path, ignore_errors=True)


def run(ctx: BenchContext) -> list[Row]:
    """Raw produce, RocksDB puts and gets; raw consume is measured beside the projector."""
    events = 50_000 if ctx.quick else 300_000
    rng = random.Random(8)
    records = list(iter_encoded([RunBatch(events // 100, 100)], rng))
    ctx.log(f"limits: raw produce of {events:,} pre-encoded events x{ctx.repeats}")
    produce = median([produce_rate(ctx, records) for _ in range(ctx.repeats)])

    # RocksDB keys and values shaped like the projector's: run ‖ sequence → event bytes
    values = [
        (key[:16] + i.to_bytes(8, "big"), value)
        for i, (key, value) in enumerate(records[: events // 2])
    ]
    ctx.log(f"limits: rocksdict puts and gets on {len(values):,} keys x{ctx.repeats}")
    puts = median([rocks_put_rate(values) for _ in range(ctx.repeats)])
    gets = [rocks_get_latencies(values, 100_000, rng) for _ in range(ctx.repeats)]
    return [
        make_row(
            "raw confluent-kafka produce, pre-encoded, behest's settings", produce, "events/s"
        ),
        make_row("raw rocksdict WriteBatch put (1,000 per batch)", puts, "puts/s"),
        make_row("raw rocksdict get", median([g[0] for g in gets]) * 1e6, "µs"),
        make_row("raw rocksdict multi-get of 1,000 keys", median([g[1] for g in gets]) * 1e3, "ms"),
    ]


if __name__ == "__main__":
    child_main({"consume": _consume})
