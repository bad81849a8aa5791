"""Realistic agent-run traffic, for demos, load and tests.

Two halves: a pure, seeded plan of what each run does (`plan_runs`, `RunPlan.payloads`,
`interleave`: no I/O, unit-tested), and `simulate`, which stamps the plans into events and
produces them, half through `EventProducer` (in a thread) and half through
`AsyncEventProducer`, so every run of the demo also proves both clients agree.

A run starts (sessions are shared by a few runs), then iterates: context built, model
call, streamed text, sometimes tool calls with argument deltas and their executions
(success or failure), usage, the assistant message; now and then a doom loop or a
compaction circuit opens. It ends completed (occasionally with a provider's own finish
reason), failed or cancelled; about one run in ten is still active (no terminal event).
"""

# ruff: noqa: S311 - seeded pseudo-randomness is the point here; nothing is secret

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, Final

from behest.config import Settings
from behest.emit.delivery import Delivery
from behest.emit.recorder import RunStamper
from behest.events import (
    AssistantMessageCommitted,
    CompactionCircuitOpened,
    ContextBuilt,
    DoomLoopDetected,
    KnownFinishReason,
    ModelName,
    ModelStarted,
    Payload,
    ProviderId,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunId,
    RunStarted,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolExecutionFailure,
    ToolExecutionFinished,
    ToolExecutionStarted,
    ToolExecutionSuccess,
    ToolMessageCommitted,
    UnknownFinishReason,
    UsageRecorded,
)

__all__ = [
    "Outcome",
    "RunPlan",
    "SimulationSummary",
    "interleave",
    "plan_runs",
    "simulate",
]

CHUNK: Final = 256
"""Events handed to a producer per `emit_many` (in interleaved order)."""

MODELS: Final[Sequence[tuple[str, str]]] = (
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "o3-mini"),
    ("anthropic", "claude-sonnet-4"),
    ("anthropic", "claude-3-5-haiku"),
    ("google", "gemini-2.0-flash"),
    ("mistral", "mistral-large"),
)
TOOLS: Final[Mapping[str, Callable[[random.Random], dict[str, Any]]]] = {
    "web_search": lambda r: {"query": r.choice(["kafka idempotence", "rocksdb tuning", "avro"])},
    "read_file": lambda r: {"path": r.choice(["src/main.rs", "README.md", "docs/api.md"])},
    "run_sql": lambda r: {"sql": f"select id from runs limit {r.randint(1, 50)}"},  # noqa: S608
    "get_weather": lambda r: {"city": r.choice(["Lisbon", "Osaka", "Lagos", "Quito"])},
    "calculator": lambda r: {"expression": f"{r.randint(1, 999)} * {r.randint(1, 99)}"},
}
WORDS: Final = (
    *("the", "run", "used", "a", "tool", "to", "check", "the", "answer", "and", "then"),
    *("it", "wrote", "a", "short", "summary", "of", "what", "it", "found", "in", "the"),
    *("logs", "so", "the", "user", "can", "decide", "what", "to", "do", "next"),
)
APPS: Final = ("support-bot", "code-review", "research-agent", "sql-copilot")
TOOL_ERRORS: Final = ("timeout after 30s", "permission denied", "HTTP 503 from upstream")
RUN_ERRORS: Final = (
    "provider error: 429 Too Many Requests",
    "provider error: 500 Internal Server Error",
    "tool loop exceeded 8 iterations",
    "context window exceeded",
)
UNKNOWN_REASONS: Final = ("max_output_tokens", "recitation", "pause_turn")


class Outcome(StrEnum):
    """How a simulated run ends (`active`: it has not ended yet)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ACTIVE = "active"


_OUTCOMES: Final = (Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED, Outcome.ACTIVE)
_OUTCOME_WEIGHTS: Final = (70, 12, 8, 10)


def seeded_uuid(rng: random.Random) -> uuid.UUID:
    """A version-4 UUID drawn from `rng`, so a seed reproduces every id."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


@dataclass(frozen=True)
class RunPlan:
    """What one simulated run will do; `payloads()` replays it identically every time."""

    index: int
    run_id: RunId
    session_id: uuid.UUID
    provider: str
    model: str
    outcome: Outcome
    seed: int

    def event_count(self) -> int:
        """How many events the run has (replays the plan)."""
        return sum(1 for _ in self.payloads())

    def payloads(self) -> Iterator[Payload]:
        """The run's payloads in order (generated lazily, from the plan's own seed)."""
        rng = random.Random(self.seed)
        provider, model = ProviderId(self.provider), ModelName(self.model)
        yield RunStarted(
            session_id=self.session_id,
            provider=provider,
            model=model,
            metadata={
                "app": rng.choice(APPS),
                "user": f"user-{rng.randint(1, 500)}",
                "priority": rng.choice(["low", "normal", "high"]),
                "tags": rng.sample(["beta", "eval", "prod", "trace"], k=rng.randint(0, 2)),
            },
        )
        iterations = rng.randint(1, 4)
        # Where a run that does not complete stops: inside its last iteration.
        stop_at = rng.randint(1, iterations) if self.outcome is not Outcome.COMPLETED else None
        messages = rng.randint(1, 6)
        compaction_failures = 0
        for iteration in range(1, iterations + 1):
            messages += 1
            yield ContextBuilt(message_count=messages)
            yield ModelStarted(provider=provider, model=model, iteration=iteration)
            if stop_at == iteration and rng.random() < 0.3:
                break  # interrupted while the model was called
            for _ in range(rng.randint(2, 8)):
                yield TextDelta(delta=" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) + " ")
            if iteration < iterations or rng.random() < 0.2:
                yield from self._tool_calls(rng, rng.randint(1, 2))
                messages += 1
            input_tokens = 200 * messages + rng.randint(0, 400)
            yield UsageRecorded(usage=TokenUsage.new(input_tokens, rng.randint(20, 600)))
            yield AssistantMessageCommitted(message_id=seeded_uuid(rng))
            messages += 1
            if rng.random() < 0.04:
                yield DoomLoopDetected(
                    description=f"same tool call repeated {rng.randint(3, 6)} times"
                )
            if rng.random() < 0.03:
                compaction_failures += rng.randint(3, 5)
                yield CompactionCircuitOpened(consecutive_failures=compaction_failures)
            if stop_at == iteration:
                break
        match self.outcome:
            case Outcome.COMPLETED:
                yield RunCompleted(finish_reason=self._finish_reason(rng), iterations=iterations)
            case Outcome.FAILED:
                yield RunFailed(error=rng.choice(RUN_ERRORS))
            case Outcome.CANCELLED:
                yield RunCancelled()
            case Outcome.ACTIVE:
                pass

    @staticmethod
    def _tool_calls(rng: random.Random, count: int) -> Iterator[Payload]:
        calls = []
        for _ in range(count):
            name = rng.choice(list(TOOLS))
            call = ToolCall(id=f"call_{rng.getrandbits(96):024x}", name=name, arguments=None)
            arguments = TOOLS[name](rng)
            call = call.model_copy(update={"arguments": arguments})
            calls.append(call)
            yield ToolCallStarted(call_id=call.id, tool_name=name)
            text = _json_text(arguments)
            cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 3))))
            for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
                yield ToolCallDelta(call_id=call.id, delta=text[start:end])
            yield ToolCallCompleted(call=call)
        for call in calls:
            yield ToolExecutionStarted(call_id=call.id, tool_name=call.name)
            result: ToolExecutionSuccess | ToolExecutionFailure
            if rng.random() < 0.85:
                result = ToolExecutionSuccess(
                    output={"ok": True, "items": rng.randint(0, 20), "tool": call.name}
                )
            else:
                result = ToolExecutionFailure(error=rng.choice(TOOL_ERRORS))
            yield ToolExecutionFinished(
                call_id=call.id,
                tool_name=call.name,
                result=result,
                duration_ms=int(rng.lognormvariate(5, 1)),
            )
            yield ToolMessageCommitted(message_id=seeded_uuid(rng))

    @staticmethod
    def _finish_reason(rng: random.Random) -> KnownFinishReason | UnknownFinishReason:
        roll = rng.random()
        if roll < 0.05:
            return UnknownFinishReason(unknown=rng.choice(UNKNOWN_REASONS))
        if roll < 0.12:
            return KnownFinishReason.LENGTH
        if roll < 0.14:
            return KnownFinishReason.CONTENT_FILTER
        return KnownFinishReason.STOP


def _json_text(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def plan_runs(runs: int, seed: int) -> list[RunPlan]:
    """`runs` run plans, the same for the same seed. Several runs share each session."""
    if runs < 0:
        raise ValueError(f"runs must be 0 or more, got {runs}")
    rng = random.Random(seed)
    sessions = [seeded_uuid(rng) for _ in range(max(1, runs // 3))]
    plans = []
    for index in range(runs):
        provider, model = rng.choice(MODELS)
        plans.append(
            RunPlan(
                index=index,
                run_id=RunId(seeded_uuid(rng)),
                session_id=rng.choice(sessions),
                provider=provider,
                model=model,
                outcome=rng.choices(_OUTCOMES, weights=_OUTCOME_WEIGHTS)[0],
                seed=rng.getrandbits(64),
            )
        )
    return plans


def interleave(
    plans: Sequence[RunPlan], concurrency: int, seed: int
) -> Iterator[tuple[RunPlan, Payload]]:
    """Every plan's payloads, with up to `concurrency` runs in progress at once and the
    next event drawn from a random one of them (each run's own order is kept)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be 1 or more, got {concurrency}")
    rng = random.Random(seed)
    waiting = iter(plans)
    active: list[tuple[RunPlan, Iterator[Payload]]] = []

    def admit() -> None:
        while len(active) < concurrency:
            plan = next(waiting, None)
            if plan is None:
                return
            active.append((plan, plan.payloads()))

    admit()
    while active:
        index = rng.randrange(len(active))
        plan, payloads = active[index]
        payload = next(payloads, None)
        if payload is None:
            active[index] = active[-1]
            active.pop()
            admit()
            continue
        yield plan, payload


# --- producing -----------------------------------------------------------------------------


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
            for delivery in deliveries:
                known = self.last.get(delivery.partition)
                if known is None or known.offset < delivery.offset:
                    self.last[delivery.partition] = delivery
            self.events += len(deliveries)
        self._advance(len(deliveries))


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


def _produce_sync(
    settings: Settings,
    overrides: Mapping[str, Any] | None,
    plans: Sequence[RunPlan],
    concurrency: int,
    seed: int,
    tally: _Tally,
) -> None:
    from behest.emit.producer import EventProducer

    with EventProducer(settings, overrides) as producer:
        futures = []
        for chunk in _stamped_chunks(plans, concurrency, seed):
            future = producer.emit_many(chunk)
            future.add_done_callback(tally.on_done)
            futures.append(future)
        producer.flush()
        for future in futures:
            future.result()  # raises the ProduceError of a failed chunk


async def _produce_async(
    settings: Settings,
    overrides: Mapping[str, Any] | None,
    plans: Sequence[RunPlan],
    concurrency: int,
    seed: int,
    tally: _Tally,
) -> None:
    from behest.emit.aio import AsyncEventProducer

    async with AsyncEventProducer(settings, overrides) as producer:
        futures = []
        for chunk in _stamped_chunks(plans, concurrency, seed):
            future = producer.emit_many(chunk)
            future.add_done_callback(tally.on_done)
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
    halves = (plans[0::2], plans[1::2])
    shares = (max(1, (concurrency + 1) // 2), max(1, concurrency // 2))

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
    failure: list[BaseException] = []

    def sync_half() -> None:
        try:
            _produce_sync(settings, overrides, halves[0], shares[0], seed, tallies[0])
        except BaseException as error:
            failure.append(error)

    started = time.perf_counter()
    with bar:
        thread = threading.Thread(target=sync_half, name="behest-simulate-sync")
        thread.start()
        try:
            if halves[1]:
                asyncio.run(
                    _produce_async(settings, overrides, halves[1], shares[1], seed + 1, tallies[1])
                )
        finally:
            thread.join()
    seconds = time.perf_counter() - started
    if failure:
        raise failure[0]

    last: dict[int, Delivery] = {}
    for tally in tallies:
        for partition, delivery in tally.last.items():
            known = last.get(partition)
            if known is None or known.offset < delivery.offset:
                last[partition] = delivery
    statuses = Counter(str(plan.outcome) for plan in plans)
    return SimulationSummary(
        seed=seed,
        runs=runs,
        events=tallies[0].events + tallies[1].events,
        statuses={str(o): statuses.get(str(o), 0) for o in _OUTCOMES},
        run_ids=[plan.run_id for plan in plans],
        last_delivery=dict(sorted(last.items())),
        by_producer={"confluent-kafka": tallies[0].events, "aiokafka": tallies[1].events},
        seconds=seconds,
    )
