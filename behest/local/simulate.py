"""Realistic agent-run traffic produced, for demos, load and tests.

`simulate` stamps the seeded plans of `behest.local.traffic` into events and produces
them, half through `EventProducer` (in a thread) and half through `AsyncEventProducer`,
so every run of the demo also proves both clients agree.
"""

# ruff: noqa: S311 - seeded pseudo-randomness is the point here; nothing is secret

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from behest.config import Settings
from behest.emit.delivery import Delivery
from behest.emit.recorder import RunStamper
from behest.events import RunId
from behest.local.traffic import OUTCOMES, RunPlan, interleave, plan_runs, seeded_uuid

__all__ = ["SimulationSummary", "simulate"]

CHUNK: Final = 256
"""Events handed to a producer per `emit_many` (in interleaved order)."""


@dataclass
class SimulationSummary:
    """What `simulate` produced: enough to check it, query it, or reproduce it."""

    seed: int
    runs: int
    events: int
    statuses: dict[str, int]
    run_ids: list[RunId]
    last_delivery: dict[int, Delivery]
    by_producer: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class _Tally:
    """Deliveries of one producer's half: counts and the last offset per partition."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        self.events = 0
        self.last: dict[int, Delivery] = {}
        self._advance = advance
        self._lock = threading.Lock()

    def on_done(self, future: Future[list[Delivery]] | asyncio.Future[list[Delivery]]) -> None:
        """Done-callback of an `emit_many` future (failures are raised by the producer half)."""
        if not future.cancelled() and future.exception() is None:
            self.record(future.result())

    def record(self, deliveries: list[Delivery]) -> None:
        with self._lock:
            _keep_latest(self.last, deliveries)
            self.events += len(deliveries)
        self._advance(len(deliveries))


def _keep_latest(last: dict[int, Delivery], deliveries: Iterable[Delivery]) -> None:
    """Keep in `last`, per partition, the delivery of the highest offset."""
    for delivery in deliveries:
        known = last.get(delivery.partition)
        if known is None or known.offset < delivery.offset:
            last[delivery.partition] = delivery


@dataclass(frozen=True)
class _Half:
    """One producer's share: its runs, how many of them in progress at once, the seed of
    their interleaving, and the tally of what it delivered."""

    plans: Sequence[RunPlan]
    concurrency: int
    seed: int
    tally: _Tally

    def chunks(self) -> Iterator[list[Any]]:
        return _stamped_chunks(self.plans, self.concurrency, self.seed)


def _stamped_chunks(plans: Sequence[RunPlan], concurrency: int, seed: int) -> Iterator[list[Any]]:
    """Interleaved events, stamped (ids from the plan's seed, times from the clock), in
    chunks for `emit_many`."""
    stampers: dict[int, RunStamper] = {}
    chunk: list[Any] = []
    for plan, payload in interleave(plans, concurrency, seed):
        stamper = stampers.get(plan.index)
        if stamper is None:
            ids = random.Random(plan.seed ^ 0x5EED)
            stamper = stampers[plan.index] = RunStamper(
                plan.run_id, session_id=plan.session_id, new_event_id=partial(seeded_uuid, ids)
            )
        chunk.append(stamper.stamp(payload))
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _produce_sync(settings: Settings, overrides: Mapping[str, Any] | None, half: _Half) -> None:
    from behest.emit.producer import EventProducer

    with EventProducer(settings, overrides) as producer:
        futures = []
        for chunk in half.chunks():
            future = producer.emit_many(chunk)
            future.add_done_callback(half.tally.on_done)
            futures.append(future)
        producer.flush()
        for future in futures:
            future.result()  # raises the ProduceError of a failed chunk


async def _produce_async(
    settings: Settings, overrides: Mapping[str, Any] | None, half: _Half
) -> None:
    from behest.emit.aio import AsyncEventProducer

    async with AsyncEventProducer(settings, overrides) as producer:
        futures = []
        for chunk in half.chunks():
            future = producer.emit_many(chunk)
            future.add_done_callback(half.tally.on_done)
            futures.append(future)
            await asyncio.sleep(0)  # let the sender task run while we stamp
        await asyncio.gather(*futures)


def simulate(
    settings: Settings,
    runs: int,
    *,
    concurrency: int = 8,
    seed: int | None = None,
    progress: bool = False,
    overrides: Mapping[str, Any] | None = None,
    check_topic: bool = True,
) -> SimulationSummary:
    """Produce `runs` simulated runs (`concurrency` in progress at once) and report.

    Even-numbered runs go through `EventProducer`, odd ones through `AsyncEventProducer`.
    `overrides` are producer settings for both (librdkafka names). Raises
    `TopicMissingError`/`KafkaUnavailableError` up front, `ProduceError` if events fail.
    """
    if seed is None:
        seed = random.SystemRandom().getrandbits(32)
    if check_topic:
        from behest.admin import ensure_topic_exists

        ensure_topic_exists(settings)
    plans = plan_runs(runs, seed)

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        TextColumn("[bold]simulating[/] {task.fields[runs]} runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    )
    total = sum(plan.event_count() for plan in plans) if progress else None
    task = bar.add_task("events", total=total, runs=runs)

    def advance(count: int) -> None:
        bar.advance(task, count)

    tallies = (_Tally(advance), _Tally(advance))
    halves = (
        _Half(plans[0::2], max(1, (concurrency + 1) // 2), seed, tallies[0]),
        _Half(plans[1::2], max(1, concurrency // 2), seed + 1, tallies[1]),
    )
    failure: list[BaseException] = []

    def sync_half() -> None:
        try:
            _produce_sync(settings, overrides, halves[0])
        except BaseException as error:
            failure.append(error)

    started = time.perf_counter()
    with bar:
        thread = threading.Thread(target=sync_half, name="behest-simulate-sync")
        thread.start()
        try:
            if halves[1].plans:
                asyncio.run(_produce_async(settings, overrides, halves[1]))
        finally:
            thread.join()
    seconds = time.perf_counter() - started
    if failure:
        raise failure[0]

    last: dict[int, Delivery] = {}
    for tally in tallies:
        _keep_latest(last, tally.last.values())
    statuses = Counter(str(plan.outcome) for plan in plans)
    return SimulationSummary(
        seed=seed,
        runs=runs,
        events=tallies[0].events + tallies[1].events,
        statuses={str(o): statuses.get(str(o), 0) for o in OUTCOMES},
        run_ids=[plan.run_id for plan in plans],
        last_delivery=dict(sorted(last.items())),
        by_producer={"confluent-kafka": tallies[0].events, "aiokafka": tallies[1].events},
        seconds=seconds,
    )
