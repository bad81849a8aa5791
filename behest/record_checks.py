"""What an `AgentEvent` demands of a decoded record beyond the Avro schema.

The projector checks every event with `check_record` before storing it, so that no
stored event can fail a reader; about 20 times cheaper than building the model.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from behest.avro_program import C_JSON, C_RANGE, C_UUID
from behest.errors import CodecError
from behest.events import EventRecord
from behest.times import EPOCH, MICROSECOND
from behest.writer_schemas import NAMESPACE

__all__ = ["FIELD_CHECKS", "MAX_JSON_DEPTH", "check_record", "json_value"]

MAX_JSON_DEPTH = 128
"""JSON values nest at most this deep: a reader validates and serializes them recursively,
and pydantic and orjson stop near 255 levels (with the envelope around them)."""

_MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - EPOCH) // MICROSECOND
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // MICROSECOND
_UUID = TypeAdapter(uuid.UUID)
_CANONICAL_UUID = re.compile("-".join(f"[0-9a-f]{{{n}}}" for n in (8, 4, 4, 4, 12))).fullmatch


def json_value(text: str, where: str) -> Any:
    """The value of JSON text; `CodecError` naming `where` when it does not parse."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise CodecError(f"{where} is not valid JSON text ({error}): {text!r:.80}") from None


def _check_uuid(text: str, where: str) -> None:
    if _CANONICAL_UUID(text) is not None:
        return  # canonical lowercase text, the common case
    try:
        _UUID.validate_python(text)
    except ValidationError:
        raise CodecError(f"{where} {text!r:.80} is not a UUID") from None


def _check_count(value: int, where: str) -> None:
    if value < 0:
        raise CodecError(f"{where} is {value}: it counts, so it cannot be negative")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_json(text: str, where: str) -> None:
    value = json_value(text, where)
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise CodecError(f"{where} nests deeper than {MAX_JSON_DEPTH} levels")


def _check_run_started(fields: dict[str, Any]) -> None:
    _check_uuid(fields["session_id"], "RunStarted.session_id")
    _check_json(fields["metadata"], "RunStarted.metadata")


def _check_tool_execution_finished(fields: dict[str, Any]) -> None:
    _check_count(fields["duration_ms"], "ToolExecutionFinished.duration_ms")
    name, result = fields["result"]
    if name == f"{NAMESPACE}.ToolExecutionSuccess":
        _check_json(result["output"], "ToolExecutionSuccess.output")


def _check_usage(fields: dict[str, Any]) -> None:
    usage = fields["usage"]
    for name in ("input_tokens", "output_tokens", "total_tokens"):
        _check_count(usage[name], f"UsageRecorded.usage.{name}")


def _counts(variant: str, name: str) -> Callable[[dict[str, Any]], None]:
    def check(fields: dict[str, Any]) -> None:
        _check_count(fields[name], f"{variant}.{name}")

    return check


def _message_id(variant: str) -> Callable[[dict[str, Any]], None]:
    def check(fields: dict[str, Any]) -> None:
        _check_uuid(fields["message_id"], f"{variant}.message_id")

    return check


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    f"{NAMESPACE}.RunStarted": _check_run_started,
    f"{NAMESPACE}.ContextBuilt": _counts("ContextBuilt", "message_count"),
    f"{NAMESPACE}.ModelStarted": _counts("ModelStarted", "iteration"),
    f"{NAMESPACE}.ToolCallCompleted": lambda f: _check_json(
        f["call"]["arguments"], "ToolCall.arguments"
    ),
    f"{NAMESPACE}.ToolExecutionFinished": _check_tool_execution_finished,
    f"{NAMESPACE}.AssistantMessageCommitted": _message_id("AssistantMessageCommitted"),
    f"{NAMESPACE}.ToolMessageCommitted": _message_id("ToolMessageCommitted"),
    f"{NAMESPACE}.UsageRecorded": _check_usage,
    f"{NAMESPACE}.RunCompleted": _counts("RunCompleted", "iterations"),
    f"{NAMESPACE}.CompactionCircuitOpened": _counts(
        "CompactionCircuitOpened", "consecutive_failures"
    ),
}
"""Per variant, what `AgentEvent` demands beyond the Avro schema (the other variants'
fields are plain strings the schema already guarantees)."""


def check_record(record: EventRecord) -> None:
    """Raise `CodecError` unless `to_event(record)` would succeed: ids are UUIDs, counts
    are not negative, the time lies in the years 1 to 9999, JSON text parses (and nests at
    most `MAX_JSON_DEPTH` deep). The projector checks every event with it before storing
    it, so that no stored event can fail a reader; about 20 times cheaper than `to_event`."""
    _check_uuid(record["event_id"], "event_id")
    _check_uuid(record["run_id"], "run_id")
    if record["sequence"] < 0:
        raise CodecError(f"event sequence {record['sequence']} is negative")
    if not _MIN_MICROS <= record["timestamp"] <= _MAX_MICROS:
        raise CodecError(f"timestamp {record['timestamp']} µs is outside the years 1 to 9999")
    name, fields = record["payload"]
    check = _CHECKS.get(name)
    if check is not None:
        check(fields)


_COUNT = (C_RANGE, 0, 2**63 - 1)
_ID = (C_UUID, 0, 0)
_JSON_TEXT = (C_JSON, 0, 0)
FIELD_CHECKS: dict[str, tuple[int, int, int]] = {
    f"{NAMESPACE}.{field}": check
    for field, check in {
        "AgentEvent.event_id": _ID,
        "AgentEvent.run_id": _ID,
        "AgentEvent.sequence": _COUNT,
        "AgentEvent.timestamp": (C_RANGE, _MIN_MICROS, _MAX_MICROS),
        "RunStarted.session_id": _ID,
        "RunStarted.metadata": _JSON_TEXT,
        "ContextBuilt.message_count": _COUNT,
        "ModelStarted.iteration": _COUNT,
        "ToolCall.arguments": _JSON_TEXT,
        "ToolExecutionFinished.duration_ms": _COUNT,
        "ToolExecutionSuccess.output": _JSON_TEXT,
        "AssistantMessageCommitted.message_id": _ID,
        "ToolMessageCommitted.message_id": _ID,
        "TokenUsage.input_tokens": _COUNT,
        "TokenUsage.output_tokens": _COUNT,
        "TokenUsage.total_tokens": _COUNT,
        "RunCompleted.iterations": _COUNT,
        "CompactionCircuitOpened.consecutive_failures": _COUNT,
    }.items()
}
"""`check_record`'s rules as the compiled codec's fused `decode_checked` applies them on
the way: (check, lo, hi) per "Record.field". Strict fast checks (canonical lowercase UUIDs,
values within [lo, hi], JSON text that orjson parses and holds at most MAX_JSON_DEPTH
brackets); a record that fails one goes to `check_record`, which raises its error (or
passes it: pydantic takes uppercase UUIDs too). tests/unit/test_check_record.py proves the
two agree on records drawn from the schema."""
