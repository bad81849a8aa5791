"""The pure parts of the SDK integrations: finish reasons, JSON values, ids."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from behest.events import KnownFinishReason, UnknownFinishReason
from behest.integrations._tracker import finish_reason, json_value, stable_uuid


@pytest.mark.parametrize(
    ("reason", "calls", "expected"),
    [
        (None, False, KnownFinishReason.STOP),
        (None, True, KnownFinishReason.TOOL_CALLS),
        ("stop", True, KnownFinishReason.STOP),
        ("end_turn", False, KnownFinishReason.STOP),
        ("tool_use", False, KnownFinishReason.TOOL_CALLS),
        ("max_output_tokens", False, KnownFinishReason.LENGTH),
        ("CONTENT_FILTER", False, KnownFinishReason.CONTENT_FILTER),
        ("recitation", False, UnknownFinishReason(unknown="recitation")),
    ],
)
def test_finish_reasons_map_to_behest_terms(
    reason: str | None, calls: bool, expected: object
) -> None:
    assert finish_reason(reason, tool_calls=calls) == expected


def test_json_text_is_parsed_and_other_values_kept() -> None:
    assert json_value('{"city": "Paris"}') == {"city": "Paris"}
    assert json_value("sunny in Paris") == "sunny in Paris"
    assert json_value(["a", 1]) == ["a", 1]
    assert json_value(object()).startswith("<object object")


@given(st.text(), st.text())
def test_stable_uuids_are_stable_and_distinct(a: str, b: str) -> None:
    assert stable_uuid(a, b) == stable_uuid(a, b)
    assert (stable_uuid(a) == stable_uuid(b)) is (a == b)


def test_a_trace_id_is_the_run_id() -> None:
    pytest.importorskip("agents")
    from behest.integrations.openai_agents import run_id_of_trace

    run = uuid.uuid4()
    assert run_id_of_trace(f"trace_{run.hex}") == run
    assert run_id_of_trace("not-a-trace") == run_id_of_trace("not-a-trace")
