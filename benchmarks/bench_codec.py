"""Codec throughput on one core, beside JSON and fastavro measured in the same run.

`python -m benchmarks.bench_codec [seconds]` prints the table; `run(seconds_budget)`
returns its rows for the suite. Events are a realistic mix: per run one RunStarted, a
few model iterations of mostly TextDelta and ToolCallDelta with their ModelStarted,
ToolCallCompleted, ToolExecutionFinished and UsageRecorded, and one terminal event.
Every measurement is repeated (interleaved, so load on a shared machine hits all alike)
and reported as the median rate. Rates are per second of this process's CPU time: the
codec is pure computation, and CPU time stays honest when other work shares the cores.
The codec measured is the one `codec.implementation()` names (compiled where built;
`BEHEST_PURE_PYTHON=1` for the generated Python).
"""

from __future__ import annotations

import io
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import orjson

from behest import codec
from behest.events import (
    AgentEvent,
    KnownFinishReason,
    ModelStarted,
    RunCompleted,
    RunFailed,
    RunStarted,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolCallDelta,
    ToolExecutionFinished,
    ToolExecutionSuccess,
    UsageRecorded,
)

REPEATS = 3
TARGETS = {"encode": 300_000.0, "decode": 500_000.0}
"""The issue's ambition, in events per second on one core."""

WORDS = ("the", "a", "model", "tool", "call", "result", "kafka", "event", "run", "state", "of")


def realistic_events(runs: int, seed: int = 7) -> list[AgentEvent]:
    """Events of `runs` runs, in the proportions an agent run produces them."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 20, tzinfo=UTC)
    events: list[AgentEvent] = []
    for _ in range(runs):
        run_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        payloads: list[Any] = [
            RunStarted(
                session_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                provider="openai",
                model="gpt-4o",
                metadata={"user": f"u{rng.randrange(1000)}", "tags": ["bench"]},
            )
        ]
        iterations = rng.randint(1, 3)
        for iteration in range(1, iterations + 1):
            payloads.append(ModelStarted(provider="openai", model="gpt-4o", iteration=iteration))
            for _ in range(rng.randint(10, 30)):
                text = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
                payloads.append(TextDelta(delta=text))
            if iteration < iterations:
                call_id = f"call_{rng.getrandbits(40):x}"
                for _ in range(rng.randint(5, 15)):
                    payloads.append(ToolCallDelta(call_id=call_id, delta='{"query": "ka'))
                payloads.append(
                    ToolCallCompleted(
                        call=ToolCall(id=call_id, name="search", arguments={"query": "kafka"})
                    )
                )
                payloads.append(
                    ToolExecutionFinished(
                        call_id=call_id,
                        tool_name="search",
                        result=ToolExecutionSuccess(output={"hits": [1, 2, 3]}),
                        duration_ms=rng.randint(5, 900),
                    )
                )
            payloads.append(
                UsageRecorded(usage=TokenUsage.new(rng.randint(100, 4000), rng.randint(10, 800)))
            )
        if rng.random() < 0.9:
            payloads.append(
                RunCompleted(finish_reason=KnownFinishReason.STOP, iterations=iterations)
            )
        else:
            payloads.append(RunFailed(error="provider returned 500"))
        for sequence, payload in enumerate(payloads):
            events.append(
                AgentEvent(
                    event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    run_id=run_id,
                    sequence=sequence,
                    timestamp=start + timedelta(milliseconds=rng.randint(0, 10**9)),
                    payload=payload,
                )
            )
    rng.shuffle(events)  # interleaved runs, as on a partition
    return events


def _decode_and_check(data: bytes) -> None:
    codec.check_record(codec.decode_record(data))


def _rate(action: Callable[[Any], object], items: Sequence[Any], seconds: float) -> float:
    """Events per CPU second of `action` over `items`, looping for about `seconds` of CPU
    (at most twice that of wall time, so a crowded machine cannot stretch the run)."""
    done = 0
    start, wall_start = time.process_time(), time.perf_counter()
    elapsed = 0.0
    while done == 0 or (elapsed < seconds and time.perf_counter() - wall_start < 2 * seconds):
        for item in items:
            action(item)
        done += len(items)
        elapsed = time.process_time() - start
    return done / elapsed


def _row(
    name: str, value: float, unit: str, reference: str | None, reference_value: float | None
) -> dict[str, Any]:
    ratio = value / reference_value if reference_value else None
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_value": reference_value,
        "ratio": ratio,
    }


def run(seconds_budget: float = 20.0) -> list[dict[str, Any]]:
    """Rows `(name, value, unit, reference, reference_value, ratio)`; `ratio` above 1
    means ours is faster (or, for sizes, larger)."""
    events = realistic_events(runs=60)
    encoded = [codec.encode(event) for event in events]
    records = [codec.decode_record(data) for data in encoded]
    bodies = [data[codec.HEADER_SIZE :] for data in encoded]
    dicts = [event.model_dump(mode="json") for event in events]
    json_texts = [orjson.dumps(d) for d in dicts]
    pydantic_texts = [event.model_dump_json().encode() for event in events]
    schema = codec.CURRENT.parsed

    def fastavro_write(record: Any) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, record)
        return buffer.getvalue()

    def fastavro_read(body: bytes) -> Any:
        return fastavro.schemaless_reader(io.BytesIO(body), schema, None, return_record_name=True)

    measurements: dict[str, tuple[Callable[[Any], object], Sequence[Any]]] = {
        "encode": (codec.encode, events),
        "encode_record": (codec.encode_record, records),
        "decode_record": (codec.decode_record, encoded),
        "decode_checked": (codec.decode_checked, encoded),
        "decode_record + check_record": (_decode_and_check, encoded),
        "decode": (codec.decode, encoded),
        "pydantic model_dump_json": (AgentEvent.model_dump_json, events),
        "pydantic model_validate_json": (AgentEvent.model_validate_json, pydantic_texts),
        "orjson dumps (dicts)": (orjson.dumps, dicts),
        "orjson loads (dicts)": (orjson.loads, json_texts),
        "fastavro schemaless_writer": (fastavro_write, records),
        "fastavro schemaless_reader": (fastavro_read, bodies),
    }
    slice_seconds = seconds_budget * 0.9 / (REPEATS * len(measurements))
    rates: dict[str, list[float]] = {name: [] for name in measurements}
    for _ in range(REPEATS):
        for name, (action, items) in measurements.items():
            rates[name].append(_rate(action, items, slice_seconds))
    rate = {name: statistics.median(values) for name, values in rates.items()}

    unit = "events/s"
    avro_size = statistics.mean(map(len, encoded))
    json_size = statistics.mean(map(len, json_texts))
    return [
        _row("encode (AgentEvent → bytes)", rate["encode"], unit,
             "pydantic model_dump_json", rate["pydantic model_dump_json"]),
        _row("encode (AgentEvent → bytes)", rate["encode"], unit,
             "issue target", TARGETS["encode"]),
        _row("encode_record (record → bytes)", rate["encode_record"], unit,
             "orjson dumps (dicts)", rate["orjson dumps (dicts)"]),
        _row("encode_record (record → bytes)", rate["encode_record"], unit,
             "fastavro schemaless_writer", rate["fastavro schemaless_writer"]),
        _row("decode_record (bytes → record)", rate["decode_record"], unit,
             "orjson loads (dicts)", rate["orjson loads (dicts)"]),
        _row("decode_record (bytes → record)", rate["decode_record"], unit,
             "fastavro schemaless_reader", rate["fastavro schemaless_reader"]),
        _row("decode_record (bytes → record)", rate["decode_record"], unit,
             "issue target (decode)", TARGETS["decode"]),
        _row("decode_checked (bytes → checked)", rate["decode_checked"], unit,
             "decode_record + check_record", rate["decode_record + check_record"]),
        _row("decode_checked (bytes → checked)", rate["decode_checked"], unit,
             "fastavro schemaless_reader", rate["fastavro schemaless_reader"]),
        _row("decode (bytes → AgentEvent)", rate["decode"], unit,
             "pydantic model_validate_json", rate["pydantic model_validate_json"]),
        _row("decode (bytes → AgentEvent)", rate["decode"], unit,
             "issue target", TARGETS["decode"]),
        _row("event size, Avro single-object", avro_size, "bytes",
             "orjson JSON of the same event", json_size),
    ]  # fmt: skip


def main(argv: Sequence[str]) -> int:
    budget = float(argv[0]) if argv else 20.0
    rows = run(budget)
    print(f"codec ({codec.implementation()}), events per CPU second, median of {REPEATS} "
          "interleaved repeats")  # fmt: skip
    print(f"{'measurement':34} {'value':>12} {'unit':9} {'reference (same run)':32} "
          f"{'reference':>12} {'ratio':>7}")  # fmt: skip
    for row in rows:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        print(
            f"{row['name']:34} {row['value']:>12,.0f} {row['unit']:9} {row['reference']:32} "
            f"{row['reference_value']:>12,.0f} {ratio:>7}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
