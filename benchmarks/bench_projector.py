"""Projector throughput: log → RocksDB events/s beside a raw consume of the same topic.

    python -m benchmarks.bench_projector [--events N] [--budget SECONDS] [--profile]

Fills a topic with realistic pre-encoded agent-run traffic (runs of 100 events, 200 in
flight at a time), then alternates, `repeats` times: a raw confluent-kafka consume of the
whole topic (value bytes touched, nothing decoded, same batch size) and
`Projector.run(until_caught_up=True)` into a fresh state dir (group join included in
both). Reports medians, and the decode alone as the ceiling the codec sets. Uses
BEHEST_BOOTSTRAP_SERVERS, or starts a local broker for the run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer

from behest.codec import decode_record
from behest.config import Settings
from behest.fold.projector import DEFAULT_BATCH_SIZE, Projector
from benchmarks.common import (
    Row,
    RunBatch,
    create_topic,
    delete_topic,
    fill_topic,
    kafka_broker,
    make_row,
    markdown_table,
    median,
)

EVENTS = 200_000
REPEATS = 3
PARTITIONS = 4


def raw_consume(
    bootstrap: str, topic: str, count: int, batch_size: int
) -> tuple[float, list[bytes]]:
    """Seconds to read `count` records from the start as a new group member; their values."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    values: list[bytes] = []
    start = time.perf_counter()
    consumer.subscribe([topic])
    while len(values) < count:
        for message in consumer.consume(num_messages=batch_size, timeout=1.0):
            if message.error() is None:
                values.append(message.value())
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed, values


def project_once(
    bootstrap: str, topic: str, count: int, batch_size: int, *, profile: cProfile.Profile | None
) -> float:
    """Seconds for a fresh Projector to fold the whole topic into a fresh state dir."""
    state_dir = Path(tempfile.mkdtemp(prefix="behest-bench-projector-"))
    settings = Settings(bootstrap_servers=bootstrap, topic=topic, state_dir=state_dir)
    try:
        with Projector(
            settings, group_id=f"bench-projector-{uuid.uuid4().hex[:8]}", batch_size=batch_size
        ) as projector:
            start = time.perf_counter()
            if profile is not None:
                profile.enable()
            metrics = projector.run(until_caught_up=True)
            if profile is not None:
                profile.disable()
            elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    if metrics.events_folded != count:
        raise RuntimeError(f"the projector folded {metrics.events_folded:,} of {count:,} events")
    return elapsed


def decode_seconds(values: list[bytes]) -> float:
    """Seconds `codec.decode_record` alone takes over the values: the projector's ceiling."""
    start = time.perf_counter()
    for value in values:
        decode_record(value)
    return time.perf_counter() - start


def run(
    bootstrap: str,
    seconds_budget: float = 120.0,
    *,
    events: int = EVENTS,
    repeats: int = REPEATS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    profile: cProfile.Profile | None = None,
) -> list[Row]:
    """The rows: projector events/s beside raw consume and beside decode alone.

    Repeats stop early (never below one) when another would overrun `seconds_budget`.
    """
    deadline = time.monotonic() + seconds_budget
    topic = f"bench-projector-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, PARTITIONS)
    try:
        fill_topic(bootstrap, topic, [RunBatch(events // 100, 100)])
        raw: list[float] = []
        folded: list[float] = []
        decoded: list[float] = []
        while len(folded) < repeats:
            started = time.monotonic()
            seconds, values = raw_consume(bootstrap, topic, events, batch_size)
            raw.append(seconds)
            decoded.append(decode_seconds(values))
            del values
            folded.append(project_once(bootstrap, topic, events, batch_size, profile=profile))
            profile = None  # one profiled repeat is enough
            if time.monotonic() + (time.monotonic() - started) > deadline:
                break
    finally:
        delete_topic(bootstrap, topic)
    rate = events / median(folded)
    name = f"projector end-to-end (log → RocksDB, RunState), {events:,} events"
    note = f", median of {len(folded)}"
    return [
        make_row(
            name + note,
            rate,
            "events/s",
            f"raw confluent-kafka consume, bytes only, batch {batch_size}",
            events / median(raw),
        ),
        make_row(
            name + note,
            rate,
            "events/s",
            "codec.decode_record alone over the same bytes (the ceiling)",
            events / median(decoded),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds, fill included")
    parser.add_argument("--profile", action="store_true", help="cProfile one projector run")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    with kafka_broker(lambda line: print(line, file=sys.stderr)) as (bootstrap, description):
        rows = run(
            bootstrap, args.budget, events=args.events, repeats=args.repeats, profile=profile
        )
    print(f"broker: {description}")
    print(markdown_table(rows))
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
