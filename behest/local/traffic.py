"""Realistic agent-run traffic, planned: a pure, seeded plan of what each run does
(`plan_runs`, `RunPlan.payloads`, `interleave`: no I/O), which `behest.local.simulate`
stamps into events and produces.

A run starts (sessions are shared by a few runs), then iterates: context built, model
call, streamed text, sometimes tool calls with argument deltas and their executions
(success or failure), usage, the assistant message; now and then a doom loop or a
compaction circuit opens. It ends completed (occasionally with a provider's own finish
reason), failed or cancelled; about one run in ten is still active (no terminal event).
"""

# ruff: noqa: S311 - seeded pseudo-randomness is the point here; nothing is secret

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

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

__all__ = ["OUTCOMES", "Outcome", "RunPlan", "interleave", "plan_runs", "seeded_uuid"]

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


OUTCOMES: Final = (Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED, Outcome.ACTIVE)
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
                outcome=rng.choices(OUTCOMES, weights=_OUTCOME_WEIGHTS)[0],
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
