"""The benchmark suite's pure helpers: statistics, table formatting and the fast event
generator, whose bytes must be exactly what behest's codec reads."""

from __future__ import annotations

import random
from collections import defaultdict
from io import BytesIO
from typing import Any

import fastavro
import pytest

from behest import codec
from behest.projections import run_state
from benchmarks.common import (
    RunBatch,
    avro_long,
    format_number,
    iter_encoded,
    make_row,
    markdown_table,
    median,
    percentile,
)
from benchmarks.suite import target_note


def test_median_takes_the_middle_and_averages_an_even_count() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 50) == 50.5
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-1, 101])
def test_percentile_refuses_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="within 0"):
        percentile([1.0], q)


def test_statistics_refuse_no_values() -> None:
    with pytest.raises(ValueError):
        median([])
    with pytest.raises(ValueError):
        percentile([], 50)


def test_make_row_computes_the_ratio_only_against_a_reference() -> None:
    row = make_row("projector", 30_000, "events/s", "raw consume", 120_000)
    assert row["ratio"] == 0.25
    assert make_row("raw consume", 120_000, "events/s")["ratio"] is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (1_234_567.8, "1,234,568"), (123.4, "123"), (12.34, "12.3"), (1.234, "1.23")],
)
def test_format_number(value: float | None, text: str) -> None:
    assert format_number(value) == text


def test_format_number_keeps_three_significant_digits_below_one() -> None:
    assert format_number(0.0004567) == "0.000457"


def test_markdown_table_has_one_line_per_row_and_escapes_pipes() -> None:
    rows = [
        make_row("a | b", 2.0, "s", "ref", 4.0),
        make_row("limit", 10.0, "events/s"),
    ]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| a \\| b | 2.00 | s | ref | 4.00 | 0.50x |"
    assert lines[3] == "| limit | 10.0 | events/s | — | — | — |"


@pytest.mark.parametrize("n", [0, 1, -1, 63, 64, -65, 2**40, 1_795_132_800_000_000, -(2**63)])
def test_avro_long_matches_fastavro(n: int) -> None:
    buffer = BytesIO()
    fastavro.schemaless_writer(buffer, "long", n)
    assert avro_long(n) == buffer.getvalue()


def test_generated_events_decode_and_fold_into_whole_runs() -> None:
    batches = [RunBatch(30, 3), RunBatch(7, 100), RunBatch(2, 1000)]
    records = list(iter_encoded(batches, random.Random(1), concurrency=5))

    assert len(records) == 30 * 3 + 7 * 100 + 2 * 1000
    sequences: dict[bytes, list[int]] = defaultdict(list)
    states: dict[bytes, Any] = {}
    for key, value in records:
        record = codec.decode_record(value)
        event = codec.decode(value)  # the model form agrees too
        assert record["run_id"] == key.decode() == str(event.run_id)
        sequences[key].append(record["sequence"])
        states[key] = run_state.apply(states.get(key), record)

    for batch in batches:
        assert len(batch.run_ids) == batch.count
        for run_id in batch.run_ids:
            key = run_id.encode()
            assert sequences[key] == list(range(batch.events))
            state = states[key]
            assert state["event_count"] == batch.events
            assert state["status"] in run_state.TERMINAL
            assert state["provider"] == "openai"
    event_ids = {codec.decode_record(value)["event_id"] for _, value in records}
    assert len(event_ids) == len(records)


def test_generated_runs_interleave_and_time_moves_forward() -> None:
    records = list(iter_encoded([RunBatch(4, 10)], random.Random(2), first_event=500))
    keys = [key for key, _ in records]
    assert len(set(keys[:4])) == 4  # one event of each run in turn
    times = [codec.decode_record(value)["timestamp"] for _, value in records]
    assert times == sorted(times)
    assert len(set(times)) == len(times)


def test_a_target_returned_as_a_reference_becomes_a_note() -> None:
    rate = make_row("decode", 200_000, "events/s", "issue target", 500_000)
    latency = make_row("get p99", 38.0, "µs", "issue target", 50.0)
    assert target_note(rate) == "target decode ≥ 500,000 events/s: MISSED (200,000)"
    assert target_note(latency) == "target get p99 ≤ 50.0 µs: met (38.0)"
