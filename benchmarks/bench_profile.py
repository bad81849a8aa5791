"""Where the projector's time goes: µs per event for each stage of the consume-fold-write loop.

    python -m benchmarks.bench_profile [--events N] [--repeats R]

Over one topic of realistic traffic (runs of 100 events, 4 partitions) it alternates, per
repeat: a raw consume in the projector's own batching (`poll` + `consume(batch - 1, 0)`,
value bytes touched), a plain `Projector.run(until_caught_up=True)` into a fresh state dir,
and the same run instrumented. The instrumented run wraps each stage's functions with
`time.perf_counter_ns` and counts time *exclusively* (a stage nested in another is taken
out of its parent), so the stages add up to the instrumented run; the rows are medians over
the repeats, divided by the events folded. Group join and start-up (everything before the
first record arrives) and shutdown are left out of every per-event figure; the wrappers'
own cost shows as the gap between the instrumented and the plain total. `make bench` runs
it as the `profile` area.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from behest.config import Settings
from behest.fold import engine, projector, refold
from behest.fold.engine import BatchFolder
from behest.fold.generations import GenerationWriter
from behest.fold.projector import DEFAULT_BATCH_SIZE, Projector
from behest.fold.refold import EntityFold
from behest.fold.store import StateStore, StoreBatch
from behest.projections.run_state import RunStateProjection
from benchmarks.common import (
    BenchContext,
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

STAGES = (
    "consume (poll + consume, error filter)",
    "decode + record checks (codec.decode_checked)",
    "record checks (check_record, other framings)",
    "heads read (multi-get + decode)",
    "sequence / duplicate / gap checks",
    "state read (multi-get + decode_state)",
    "fold (apply, grouping, ordering)",
    "state encoding (encode_state)",
    "index maintenance (index_keys, diff, puts)",
    "snapshot (encode + puts)",
    "WriteBatch build (states, events, heads, offsets)",
    "WriteBatch write (RocksDB)",
    "per-partition split + result merge",
    "offset commit (async)",
    "batch upkeep (metrics, lag, heartbeat)",
)
"""In the order a record meets them."""
STARTUP = "start-up"
INSTRUMENTATION = "instrumentation (wrapper cost, calibrated)"


def _nothing() -> None:
    pass


class StageClock:
    """Exclusive nanoseconds per stage: a call nested in another stage's call is taken out of
    the outer one, so the stages add up to the time spent inside any of them."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [stage, nanoseconds of nested stages]
        self.started = False  # the first record arrived: before it, consume is start-up
        self.overhead = 0
        self.overhead = self._calibrate()
        self.ns.clear()

    def _calibrate(self, calls: int = 50_000) -> int:
        """Nanoseconds a wrapper adds to its caller's stage beyond what its own clock sees
        (the call into it, its bookkeeping): taken out of the caller's stage and counted
        as `INSTRUMENTATION` instead. Measured as a wrapped call to a wrapped no-op against
        a wrapped call to a plain one."""
        inner = self.wrap("inner", _nothing)
        with_wrapper = self.wrap("with", lambda: inner())
        without = self.wrap("without", lambda: _nothing())
        for _ in range(calls):
            with_wrapper()
            without()
        return max(0, (self.ns["with"] - self.ns["without"]) // calls)

    def current(self) -> str | None:
        return self._stack[-1][0] if self._stack else None

    def wrap(self, stage: str | Callable[[], str], function: Callable[..., Any]) -> Any:
        """`function`, its time counted to `stage` (or to what `stage()` names then)."""
        stack, ns, clock = self._stack, self.ns, time.perf_counter_ns

        def timed(*args: Any, **kwargs: Any) -> Any:
            name = stage if isinstance(stage, str) else stage()
            frame: list[Any] = [name, 0]
            stack.append(frame)
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = clock() - start
                stack.pop()
                ns[frame[0]] += elapsed - frame[1]
                if stack:
                    stack[-1][1] += elapsed + self.overhead
                    ns[INSTRUMENTATION] += self.overhead

        return timed


@contextlib.contextmanager
def instrumented(clock: StageClock) -> Iterator[None]:
    """Wrap every stage's functions for the duration (restored afterwards)."""
    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, stage: str | Callable[[], str]) -> None:
        # The attribute as the class holds it: a staticmethod (RunStateProjection.apply) must
        # be wrapped and restored as one, or every later call gets `self` as a third argument.
        stored = inspect.getattr_static(owner, name)
        patches.append((owner, name, stored))
        if isinstance(stored, staticmethod):
            setattr(owner, name, staticmethod(clock.wrap(stage, stored.__func__)))
        else:
            setattr(owner, name, clock.wrap(stage, getattr(owner, name)))

    consume = STAGES[0]

    def consuming() -> str:
        return consume if clock.started else STARTUP

    class TimedConsumer(Consumer):
        """The projector's consumer: its calls timed (the first record ends start-up)."""

        def poll(self, *args: Any, **kwargs: Any) -> Any:
            message = super().poll(*args, **kwargs)
            if message is not None:
                clock.started = True
            return message

    def snapshot_or_state() -> str:
        # encode_state within an entity's fold is a snapshot; after it, the state to store
        return STAGES[9] if clock.current() == STAGES[6] else STAGES[7]

    patch(TimedConsumer, "poll", consuming)
    patch(TimedConsumer, "consume", consume)
    patch(TimedConsumer, "commit", STAGES[13])
    patches.append((projector, "Consumer", getattr(projector, "Consumer")))  # noqa: B009
    setattr(projector, "Consumer", TimedConsumer)  # noqa: B010
    patch(Projector, "_usable", consume)
    patch(engine, "decode_checked", STAGES[1])
    patch(refold, "decode_record", STAGES[1])  # stored events re-read around late ones
    patch(engine, "check_record", STAGES[2])
    patch(BatchFolder, "_load_heads", STAGES[3])
    patch(StateStore, "get_heads", STAGES[3])
    patch(BatchFolder, "_check", STAGES[4])
    patch(BatchFolder, "_resolve", STAGES[4])
    patch(StateStore, "get_states", STAGES[5])
    patch(RunStateProjection, "decode_state", STAGES[5])
    patch(BatchFolder, "_fold", STAGES[6])
    patch(EntityFold, "fold", STAGES[6])
    patch(RunStateProjection, "apply", STAGES[6])
    patch(RunStateProjection, "encode_state", snapshot_or_state)
    patch(RunStateProjection, "index_keys", STAGES[8])
    patch(BatchFolder, "_stage", STAGES[8])
    patch(StoreBatch, "put_index", STAGES[8])
    patch(StoreBatch, "delete_index", STAGES[8])
    patch(StoreBatch, "put_snapshot", STAGES[9])
    patch(BatchFolder, "fold", STAGES[10])  # its own part: heads and offsets staged
    for name in ("put_state", "put_events", "put_head", "delete_head", "put_offset"):
        patch(StoreBatch, name, STAGES[10])
    patch(StateStore, "batch", STAGES[10])
    patch(StateStore, "write", STAGES[11])
    patch(GenerationWriter, "process", STAGES[12])
    patch(Projector, "_step", STAGES[14])
    try:
        yield
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


def project(
    bootstrap: str, topic: str, events: int, batch_size: int, clock: StageClock | None
) -> float:
    """Seconds of one projector run into a fresh state dir (instrumented with a clock)."""
    state_dir = Path(tempfile.mkdtemp(prefix="behest-bench-profile-"))
    settings = Settings(bootstrap_servers=bootstrap, topic=topic, state_dir=state_dir)
    try:
        with contextlib.ExitStack() as stack:
            if clock is not None:
                stack.enter_context(instrumented(clock))
            with Projector(
                settings, group_id=f"bench-profile-{uuid.uuid4().hex[:8]}", batch_size=batch_size
            ) as folder:
                start = time.perf_counter()
                metrics = folder.run(until_caught_up=True)
                elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    if metrics.events_folded != events:
        raise RuntimeError(f"the projector folded {metrics.events_folded:,} of {events:,} events")
    return elapsed


def raw_consume(bootstrap: str, topic: str, events: int, batch_size: int) -> float:
    """Seconds to read the topic in the projector's batching, from the first record on."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-profile-raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    consumer.subscribe([topic])
    seen = size = 0
    start = 0.0
    while seen < events:
        first = consumer.poll(0.5)
        if first is None:
            continue
        if not start:
            start = time.perf_counter()
        for message in [first, *consumer.consume(num_messages=batch_size - 1, timeout=0)]:
            if message.error() is None:
                seen += 1
                size += len(message.value() or b"")
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def profile(
    bootstrap: str,
    topic: str,
    events: int,
    *,
    repeats: int = REPEATS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seconds_budget: float = 180.0,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """The profile's rows over an already filled `topic` of `events` events."""
    deadline = time.monotonic() + seconds_budget
    raw: list[float] = []
    plain: list[float] = []
    stages: dict[str, list[float]] = defaultdict(list)
    startups: list[float] = []
    while len(plain) < repeats:
        began = time.monotonic()
        raw.append(raw_consume(bootstrap, topic, events, batch_size))
        plain.append(project(bootstrap, topic, events, batch_size, None))
        clock = StageClock()
        project(bootstrap, topic, events, batch_size, clock)
        for stage in (*STAGES, INSTRUMENTATION):
            stages[stage].append(clock.ns.get(stage, 0) / 1000 / events)
        startups.append(clock.ns.get(STARTUP, 0) / 1e9)
        log(f"profile repeat {len(plain)}: {events / plain[-1]:,.0f} events/s plain")
        if time.monotonic() + (time.monotonic() - began) > deadline:
            break
    per_event = {stage: median(values) for stage, values in stages.items()}
    total = sum(per_event.values())
    raw_us = median(raw) * 1e6 / events
    plain_us = median(plain) * 1e6 / events
    share = "share of the instrumented µs/event"
    name = f"projector profile, {events:,} events, median of {len(plain)}"
    rows = [
        make_row(f"{name}: {stage}", value, "µs/event", share, total)
        for stage, value in per_event.items()
    ]
    rows += [
        make_row(f"{name}: all stages (instrumented)", total, "µs/event", "raw consume", raw_us),
        make_row(
            f"{name}: plain projector run, group join included",
            plain_us,
            "µs/event",
            "raw consume, projector batching, from the first record",
            raw_us,
        ),
        make_row(
            f"{name}: start-up and group join of the instrumented run",
            median(startups),
            "s",
        ),
    ]
    return rows


def run(ctx: BenchContext) -> list[Row]:
    """The suite's `profile` area, over the log the projector area folds (100k events; 20k
    with --quick), so it fills no topic of its own."""
    from benchmarks.bench_scaling import log_sizes, log_topic

    events = log_sizes(ctx.quick)[0]
    topic, _ = ctx.topic(*log_topic(events))
    return profile(ctx.bootstrap, topic, events, repeats=ctx.repeats, log=ctx.log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args()
    topic = f"bench-profile-{uuid.uuid4().hex[:8]}"
    with kafka_broker(lambda line: print(line, file=sys.stderr)) as (bootstrap, description):
        create_topic(bootstrap, topic)
        try:
            fill_topic(bootstrap, topic, [RunBatch(args.events // 100, 100)])
            rows = profile(
                bootstrap,
                topic,
                args.events,
                repeats=args.repeats,
                batch_size=args.batch_size,
                log=lambda line: print(line, file=sys.stderr),
            )
        finally:
            delete_topic(bootstrap, topic)
    print(f"broker: {description}; load average {os.getloadavg()[0]:.1f}")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
