"""Avro single-object encoding of `AgentEvent`s: `C3 01`, 8-byte fingerprint, Avro body.

Schemas in `schemas/` are parsed once, at import, into a registry keyed by the
CRC-64-AVRO fingerprint of their Parsing Canonical Form. Decoding resolves any
known writer schema to the current reader schema (Avro schema resolution), so
every event ever written stays readable.

Speed: fastavro's logical-type conversions (uuid, timestamp-micros) cost about
half of a decode, so we read and write with the logical types stripped (the
fingerprint is unchanged: the canonical form has no logical types) and convert
the few fields ourselves.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form

from behest.errors import CodecError, UnknownSchemaError
from behest.events import (
    PAYLOAD_TYPES,
    AgentEvent,
    KnownFinishReason,
    RunId,
    ToolExecutionFailure,
    ToolExecutionSuccess,
    UnknownFinishReason,
)

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
NAMESPACE = "behest"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
CURRENT_SCHEMA_FILE = "agent_event.avsc"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PAYLOAD_BY_NAME = {cls.__name__: cls for cls in PAYLOAD_TYPES}
_JSON_FIELDS = {
    "RunStarted": ("metadata",),
}


def _strip_logical_types(node: Any) -> Any:
    """The same schema without logicalType annotations (identical wire format)."""
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


@dataclass(frozen=True)
class SchemaVersion:
    """One `schemas/*.avsc` file: its parsed (logical-type-free) schema and fingerprint."""

    name: str
    raw: dict[str, Any]
    parsed: dict[str, Any]
    fingerprint: bytes

    @classmethod
    def load(cls, path: Path) -> SchemaVersion:
        raw = json.loads(path.read_text())
        parsed = fastavro.parse_schema(_strip_logical_types(raw))
        canonical = to_parsing_canonical_form(fastavro.parse_schema(raw, _write_hint=False))
        fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))[::-1]  # little-endian
        return cls(path.name, raw, parsed, fp)


def _load_registry(schema_dir: Path) -> tuple[SchemaVersion, dict[bytes, SchemaVersion]]:
    current = SchemaVersion.load(schema_dir / CURRENT_SCHEMA_FILE)
    versions = {current.fingerprint: current}
    for path in sorted(schema_dir.glob("agent_event.v*.avsc")):
        version = SchemaVersion.load(path)
        versions.setdefault(version.fingerprint, version)
    return current, versions


CURRENT, VERSIONS = _load_registry(SCHEMA_DIR)


# --- encode -----------------------------------------------------------------------------------


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _payload_record(event: AgentEvent) -> tuple[str, dict[str, Any]]:
    payload = event.payload
    name = payload.type
    body = payload.model_dump(mode="python", exclude={"type"})
    match name:
        case "RunStarted":
            body["session_id"] = str(body["session_id"])
            body["metadata"] = _json_text(body["metadata"])
        case "ToolCallCompleted":
            body["call"]["arguments"] = _json_text(body["call"]["arguments"])
        case "ToolExecutionFinished":
            result = body["result"]
            if "output" in result:
                body["result"] = (
                    f"{NAMESPACE}.ToolExecutionSuccess",
                    {"output": _json_text(result["output"])},
                )
            else:
                body["result"] = (f"{NAMESPACE}.ToolExecutionFailure", result)
        case "AssistantMessageCommitted" | "ToolMessageCommitted":
            body["message_id"] = str(body["message_id"])
        case "RunCompleted":
            reason = body["finish_reason"]
            if isinstance(reason, dict):
                body["finish_reason"] = (f"{NAMESPACE}.UnknownFinishReason", reason)
            else:
                body["finish_reason"] = str(reason)
    return f"{NAMESPACE}.{name}", body


def _micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_body(event: AgentEvent) -> bytes:
    """The Avro binary body of an event, without the single-object header."""
    record = {
        "event_id": str(event.event_id),
        "run_id": str(event.run_id),
        "sequence": event.sequence,
        "timestamp": _micros(event.timestamp),
        "payload": _payload_record(event),
    }
    buffer = BytesIO()
    try:
        fastavro.schemaless_writer(buffer, CURRENT.parsed, record)
    except (ValueError, TypeError, KeyError) as error:
        raise CodecError(f"cannot encode {event.type} event {event.event_id}: {error}") from error
    return buffer.getvalue()


def encode(event: AgentEvent) -> bytes:
    """Avro single-object encoding of an event under the current schema."""
    return MAGIC + CURRENT.fingerprint + encode_body(event)


# --- decode -----------------------------------------------------------------------------------


def _json_value(text: str, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise CodecError(f"{where} is not valid JSON text: {error}") from None


def _payload_model(name: str, body: dict[str, Any]) -> Any:
    short = name.rpartition(".")[2]
    cls = _PAYLOAD_BY_NAME.get(short)
    if cls is None:
        raise CodecError(f"unknown event variant {name!r}")
    match short:
        case "RunStarted":
            body["session_id"] = uuid.UUID(body["session_id"])
            body["metadata"] = _json_value(body["metadata"], "RunStarted.metadata")
        case "ToolCallCompleted":
            call = body["call"]
            call["arguments"] = _json_value(call["arguments"], "ToolCall.arguments")
            from behest.events import ToolCall

            body["call"] = ToolCall.model_construct(**call)
        case "ToolExecutionFinished":
            result_name, result = body["result"]
            if result_name.endswith("ToolExecutionSuccess"):
                output = _json_value(result["output"], "ToolExecutionSuccess.output")
                body["result"] = ToolExecutionSuccess.model_construct(output=output)
            else:
                body["result"] = ToolExecutionFailure.model_construct(**result)
        case "AssistantMessageCommitted" | "ToolMessageCommitted":
            body["message_id"] = uuid.UUID(body["message_id"])
        case "UsageRecorded":
            from behest.events import TokenUsage

            body["usage"] = TokenUsage.model_construct(**body["usage"])
        case "RunCompleted":
            reason = body["finish_reason"]
            if isinstance(reason, tuple):
                body["finish_reason"] = UnknownFinishReason.model_construct(**reason[1])
            else:
                body["finish_reason"] = KnownFinishReason(reason)
    return cls.model_construct(**body)


def decode_record(data: bytes) -> dict[str, Any]:
    """Decode single-object bytes to the plain Avro record (current reader schema)."""
    if len(data) < HEADER_SIZE:
        raise CodecError(
            f"truncated event: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    if data[:2] != MAGIC:
        raise CodecError(
            f"not an Avro single-object encoded event: starts with {data[:2].hex()}, "
            f"expected {MAGIC.hex()}"
        )
    fp = data[2:HEADER_SIZE]
    writer = VERSIONS.get(fp)
    if writer is None:
        raise UnknownSchemaError(
            f"unknown writer schema fingerprint {fp.hex()}: add that schema version to "
            f"{SCHEMA_DIR} (known: {', '.join(v.name for v in VERSIONS.values())})"
        )
    reader = None if writer is CURRENT else CURRENT.parsed
    buffer = BytesIO(data)
    buffer.seek(HEADER_SIZE)
    try:
        record: dict[str, Any] = fastavro.schemaless_reader(
            buffer, writer.parsed, reader, return_record_name=True
        )
    except (EOFError, StopIteration) as error:
        raise CodecError(f"truncated event body ({len(data)} bytes): {error!r}") from None
    except UnicodeDecodeError as error:
        raise CodecError(f"invalid UTF-8 in event body: {error}") from None
    except Exception as error:  # fastavro raises a variety of types for corrupt bodies
        raise CodecError(f"corrupt event body: {type(error).__name__}: {error}") from None
    if buffer.tell() != len(data):
        raise CodecError(
            f"{len(data) - buffer.tell()} trailing bytes after the event body: corrupt record"
        )
    return record


def decode(data: bytes) -> AgentEvent:
    """Decode single-object bytes into an `AgentEvent` (trusted: the schema already checked
    its shape, so no pydantic re-validation on this hot path)."""
    record = decode_record(data)
    try:
        name, body = record["payload"]
        payload = _payload_model(name, body)
        return AgentEvent.model_construct(
            event_id=uuid.UUID(record["event_id"]),
            run_id=RunId(uuid.UUID(record["run_id"])),
            sequence=record["sequence"],
            timestamp=_EPOCH + timedelta(microseconds=record["timestamp"]),
            payload=payload,
        )
    except CodecError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise CodecError(f"event does not fit the model: {error}") from None
