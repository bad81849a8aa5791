"""The traffic plan is realistic, seeded and interleaved; no broker needed."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from behest.events import (
    PAYLOAD_TYPES,
    TERMINAL_TYPES,
    ModelStarted,
    RunCompleted,
    RunStarted,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    ToolExecutionFinished,
    UnknownFinishReason,
)
from behest.local.traffic import MODELS, Outcome, interleave, plan_runs


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    def traffic(seed: int) -> list[tuple[str, str]]:
        plans = plan_runs(30, seed)
        return [
            (str(p.run_id), payload.model_dump_json()) for p, payload in interleave(plans, 4, seed)
        ]

    assert traffic(11) == traffic(11)
    assert traffic(11) != traffic(12)


def test_runs_share_sessions_and_use_known_models() -> None:
    plans = plan_runs(300, seed=1)
    assert len({p.run_id for p in plans}) == 300
    sessions = Counter(p.session_id for p in plans)
    assert len(sessions) <= 100
    assert max(sessions.values()) >= 3
    assert {(p.provider, p.model) for p in plans} <= set(MODELS)


def test_outcomes_and_terminal_events() -> None:
    plans = plan_runs(400, seed=2)
    outcomes = Counter(p.outcome for p in plans)
    assert 0.05 < outcomes[Outcome.ACTIVE] / 400 < 0.16
    assert outcomes[Outcome.COMPLETED] > outcomes[Outcome.FAILED] > 0
    assert outcomes[Outcome.CANCELLED] > 0
    unknown_reasons = 0
    for plan in plans:
        payloads = list(plan.payloads())
        assert isinstance(payloads[0], RunStarted)
        assert payloads[0].session_id == plan.session_id
        assert (payloads[0].provider, payloads[0].model) == (plan.provider, plan.model)
        terminals = [p for p in payloads if p.type in TERMINAL_TYPES]
        if plan.outcome is Outcome.ACTIVE:
            assert terminals == []
            continue
        assert terminals == [payloads[-1]]
        assert payloads[-1].type.lower().removeprefix("run") == plan.outcome.value
        if isinstance(payloads[-1], RunCompleted):
            iterations = [p.iteration for p in payloads if isinstance(p, ModelStarted)]
            assert iterations == list(range(1, len(iterations) + 1))
            assert payloads[-1].iterations == iterations[-1]
            unknown_reasons += isinstance(payloads[-1].finish_reason, UnknownFinishReason)
    assert unknown_reasons > 0


def test_every_variant_appears_and_tool_calls_are_well_formed() -> None:
    seen: set[str] = set()
    for plan in plan_runs(200, seed=3):
        deltas: dict[str, str] = defaultdict(str)
        started: set[str] = set()
        for payload in plan.payloads():
            seen.add(payload.type)
            if isinstance(payload, ToolCallStarted):
                started.add(payload.call_id)
            elif isinstance(payload, ToolCallDelta):
                assert payload.call_id in started
                deltas[payload.call_id] += payload.delta
            elif isinstance(payload, ToolCallCompleted):
                import orjson

                assert orjson.loads(deltas[payload.call.id]) == payload.call.arguments
            elif isinstance(payload, ToolExecutionFinished):
                assert payload.call_id in started
    assert seen == {cls.__name__ for cls in PAYLOAD_TYPES}


@pytest.mark.parametrize("concurrency", [1, 3, 10])
def test_interleave_keeps_each_runs_order_and_the_concurrency(concurrency: int) -> None:
    plans = plan_runs(25, seed=4)
    expected = {p.run_id: list(p.payloads()) for p in plans}
    got: dict[object, list[object]] = defaultdict(list)
    in_progress: set[object] = set()
    finished: set[object] = set()
    remaining = {p.run_id: len(v) for p, v in zip(plans, expected.values(), strict=True)}
    switches = 0
    previous = None
    for plan, payload in interleave(plans, concurrency, seed=4):
        assert plan.run_id not in finished
        in_progress.add(plan.run_id)
        assert len(in_progress) <= concurrency
        got[plan.run_id].append(payload)
        remaining[plan.run_id] -= 1
        if remaining[plan.run_id] == 0:
            in_progress.discard(plan.run_id)
            finished.add(plan.run_id)
        switches += previous is not None and previous != plan.run_id
        previous = plan.run_id
    assert got == expected
    if concurrency == 1:
        assert switches == len(plans) - 1
    else:
        assert switches > 3 * len(plans)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        list(interleave(plan_runs(1, 0), 0, 0))
    with pytest.raises(ValueError, match="runs"):
        plan_runs(-1, 0)
    assert plan_runs(0, 0) == []
