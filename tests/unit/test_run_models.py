"""`run_states` builds the very models `RunState.model_validate_json` builds, or its errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from behest.codec import decode_record, encode
from behest.events import AgentEvent, RunState, TokenUsage, UnknownFinishReason
from behest.fold.projection import fold
from behest.projections.run_state import RunStateProjection
from behest.read.run_models import _check_plain, run_states
from tests.unit import strategies

PROJECTION = RunStateProjection()


def stored(events: list[AgentEvent]) -> bytes:
    """The state the projector stores for these events."""
    state = fold(PROJECTION, [decode_record(encode(e)) for e in events])
    assert state is not None
    return PROJECTION.encode_state(state)


def same_models(got: list[RunState], data: list[bytes]) -> None:
    """Equal to the validated models, field by field and type by type, and dumped alike."""
    want = [RunState.model_validate_json(d) for d in data]
    assert got == want
    for ours, theirs in zip(got, want, strict=True):
        assert type(ours) is RunState and type(ours.total_usage) is TokenUsage
        assert ours.model_fields_set == theirs.model_fields_set
        assert ours.total_usage.model_fields_set == theirs.total_usage.model_fields_set
        assert ours.model_dump_json() == theirs.model_dump_json()
        assert ours.to_json_dict() == theirs.to_json_dict()
        for name in RunState.model_fields:
            mine, valid = getattr(ours, name), getattr(theirs, name)
            assert type(mine) is type(valid), name
        # Times: aware UTC both; ours carries `datetime.UTC`, pydantic's its own `TzInfo(0)`.
        assert ours.created_at.utcoffset() == theirs.created_at.utcoffset() == timedelta(0)
        assert ours.updated_at.utcoffset() == theirs.updated_at.utcoffset() == timedelta(0)
        assert ours.model_fields_set is not theirs.model_fields_set


@settings(max_examples=60, deadline=None)
@given(st.lists(strategies.run_histories(max_events=8), min_size=1, max_size=6), st.data())
def test_folded_states_build_as_validated(histories: list[list[AgentEvent]], data: Any) -> None:
    # Whole runs, and runs seen from the middle (pending: no RunStarted folded yet).
    cut = [h[data.draw(st.integers(0, len(h) - 1)) :] for h in histories]
    batch = [stored(h) for h in histories + cut]
    same_models(run_states(batch), batch)
    same_models(run_states(batch[:1]), batch[:1])


@settings(max_examples=60, deadline=None)
@given(st.lists(strategies.run_states(), min_size=1, max_size=5))
def test_any_state_stored_as_the_fold_stores_it_builds_as_validated(
    states: list[RunState],
) -> None:
    batch = [orjson.dumps(s.to_json_dict()) for s in states]
    same_models(run_states(batch), batch)


def test_an_unknown_finish_reason_is_its_model() -> None:
    state = orjson.loads(stored(_run()))
    state["last_finish"] = {"unknown": "max_turns"}
    batch = [orjson.dumps(state), stored(_run())]
    built = run_states(batch)
    assert built[0].last_finish == UnknownFinishReason(unknown="max_turns")
    same_models(built, batch)


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": "drop"},  # another layout: pydantic fills the default
        {"iteration": 2.0},  # pydantic's lax int
        {"session_id": "00000000000000000000000000000001"},  # a UUID without hyphens
    ],
)
def test_what_the_fast_path_does_not_know_goes_through_pydantic(change: dict[str, Any]) -> None:
    state = orjson.loads(stored(_run()))
    for name, value in change.items():
        if value == "drop":
            del state[name]
        else:
            state[name] = value
    batch = [stored(_run()), orjson.dumps(state)]
    same_models(run_states(batch), batch)


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"status": "sleeping"},
        {"last_finish": "tired"},
        {"total_usage": {"input_tokens": -1, "output_tokens": 0, "total_tokens": 0}},
        {"total_usage": {"input_tokens": 1, "output_tokens": 0, "total_tokens": 1, "x": 0}},
        {"last_finish": {"unknown": "x", "more": 1}},
        {"sequence": None},
    ],
)
def test_a_wrong_state_gets_pydantics_error(change: dict[str, Any]) -> None:
    state = orjson.loads(stored(_run()))
    state.update(change)
    bad = orjson.dumps(state)
    with pytest.raises(ValidationError) as theirs:
        RunState.model_validate_json(bad)
    with pytest.raises(ValidationError) as ours:
        run_states([stored(_run()), bad])
    assert ours.value.errors() == theirs.value.errors()
    with pytest.raises(ValidationError):
        run_states([b"not json"])


def test_a_model_that_is_no_longer_plain_data_fails_the_check() -> None:
    class Checked(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int

        @field_validator("n")
        @classmethod
        def positive(cls, n: int) -> int:
            return abs(n)

    class Plain(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int

    class Stored:
        n: int

    class Other:
        m: int

    assert _check_plain(Plain, Stored) == {"n"}
    with pytest.raises(TypeError, match="no longer plain data"):
        _check_plain(Checked, Stored)
    with pytest.raises(TypeError, match="fields in its order"):
        _check_plain(Plain, Other)


def _run() -> list[AgentEvent]:
    from tests.unit.test_query import run_events

    return run_events(end="completed")
