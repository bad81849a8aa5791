"""Avro single-object encoding of `AgentEvent`s: `C3 01`, 8-byte fingerprint, Avro body.

The header names the writer schema by fingerprint (`behest.writer_schemas` keeps them).
Decoding resolves any known writer schema to the current reader schema, so every event
ever written stays readable. Three steps, each usable on its own::

    bytes ──decode_record──► EventRecord ──to_event──► AgentEvent
    bytes ◄──encode_record── EventRecord
    bytes ◄──encode───────────────────────────────── AgentEvent

`EventRecord` is the plain Avro record (see `behest.events.EventRecord`): nested
unions of records come as `(full name, fields)` tuples, like the payload itself
(`result` of `ToolExecutionFinished`; `finish_reason` of `RunCompleted`, whose known
reasons are plain strings), and JSON-valued fields stay JSON text. JSON text follows
orjson: integers beyond 64 bits cannot be encoded, and non-finite floats become `null`.

Speed: fastavro interprets the schema for every event. The projector's hot path
decodes millions of events, so the current schema is compiled, once: into a program for
the C extension `behest._cavro` (`behest.avro_program`, several times faster again) when
it is built, else into straight-line Python functions (`behest.avro_reader`,
`behest.avro_writer`), about twice as fast as fastavro. Both give the same records, bytes
and errors; `implementation()` says which one runs, `BEHEST_PURE_PYTHON=1` forces the
Python one. Events written under an older schema take fastavro's schema resolution.

What the model demands beyond the schema is checked by `check_record`
(`behest.record_checks`); `decode_checked` decodes and checks in one call (fused in C).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from io import BytesIO
from typing import Any, cast

import fastavro
import orjson
from pydantic import TypeAdapter, ValidationError

from behest import avro_program
from behest.avro_reader import compile_decoder
from behest.avro_writer import compile_object_writer, compile_writer
from behest.errors import CodecError
from behest.events import (
    PAYLOAD_TYPES,
    AgentEvent,
    EventRecord,
    TokenUsage,
    ToolCall,
    ToolExecutionFailure,
    ToolExecutionSuccess,
    UnknownFinishReason,
)
from behest.record_checks import (
    FIELD_CHECKS,
    MAX_JSON_DEPTH,
    check_record,
    json_fits,
    json_value,
)
from behest.times import EPOCH, MICROSECOND
from behest.writer_schemas import (
    CURRENT,
    CURRENT_SCHEMA_FILE,
    NAMESPACE,
    REFUSED,
    SCHEMA_DIR,
    VERSIONS,
    SchemaSource,
    SchemaVersion,
    add_schema_source,
    add_writer_schema,
    lookup,
    on_published_schema,
    schema_fingerprint,
)

__all__ = [
    "CURRENT",
    "CURRENT_SCHEMA_FILE",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_JSON_DEPTH",
    "NAMESPACE",
    "REFUSED",
    "SCHEMA_DIR",
    "VERSIONS",
    "SchemaSource",
    "SchemaVersion",
    "add_schema_source",
    "add_writer_schema",
    "check_record",
    "decode",
    "decode_body",
    "decode_checked",
    "decode_record",
    "encode",
    "encode_body",
    "encode_record",
    "encode_stamped",
    "header_fingerprint",
    "implementation",
    "on_published_schema",
    "schema_fingerprint",
    "to_event",
    "use_compiled",
    "writer_schema",
]

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


def header_fingerprint(data: bytes | None) -> bytes | None:
    """The 8 fingerprint bytes of a single-object encoded value, if it has the header."""
    if data is None or len(data) < HEADER_SIZE or data[:2] != MAGIC:
        return None
    return bytes(data[2:HEADER_SIZE])


_CURRENT_HEADER = MAGIC + CURRENT.fingerprint
_ENCODE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, OverflowError, struct.error)

# --- the two implementations of the current schema: compiled (C) and generated Python ---------

_py_read = compile_decoder(CURRENT.parsed)
_py_write = compile_writer(CURRENT.parsed)


def _py_encode(prefix: bytes, record: EventRecord) -> bytes:
    out = bytearray(prefix)
    _py_write(out, record)
    return bytes(out)


def _py_read_checked(data: bytes, offset: int) -> EventRecord:
    record: EventRecord = _py_read(data, offset)
    check_record(record)
    return record


def _py_decode_event(data: bytes, other: Callable[[bytes], EventRecord]) -> EventRecord:
    if type(data) is bytes and data[:HEADER_SIZE] == _CURRENT_HEADER:
        try:
            return _py_read(data, HEADER_SIZE)  # type: ignore[no-any-return]
        except (IndexError, UnicodeDecodeError) as error:
            raise _corrupt(data, error) from None
    return other(data)


def _py_decode_event_checked(data: bytes, other: Callable[[bytes], EventRecord]) -> EventRecord:
    if type(data) is bytes and data[:HEADER_SIZE] == _CURRENT_HEADER:
        try:
            return _py_read_checked(data, HEADER_SIZE)
        except (IndexError, UnicodeDecodeError) as error:
            raise _corrupt(data, error) from None
    return other(data)


_PROGRAM = avro_program.load(
    CURRENT.parsed, FIELD_CHECKS, json_fits, check_record, header=_CURRENT_HEADER
)
_read_current: Callable[[bytes, int], EventRecord] = _py_read
_read_checked: Callable[[bytes, int], EventRecord] = _py_read_checked
_encode_current: Callable[[bytes, EventRecord], bytes] = _py_encode
_Decoder = Callable[[bytes, Callable[[bytes], EventRecord]], EventRecord]
_decode_event: _Decoder = _py_decode_event
_decode_event_checked: _Decoder = _py_decode_event_checked


def use_compiled(enabled: bool = True) -> bool:
    """Run the compiled codec (if `enabled` and it is built) or the generated Python;
    True if the compiled one now runs. Both give the same records, bytes and errors (the
    tests run under each); at import, the compiled one is chosen unless
    `BEHEST_PURE_PYTHON=1`."""
    global _read_current, _read_checked, _encode_current, _encode_event, _micros
    global _decode_event, _decode_event_checked
    if enabled and _PROGRAM is not None and _EVENT_PROGRAM is not None:
        _read_current, _read_checked = _PROGRAM.decode, _PROGRAM.decode_checked
        _decode_event, _decode_event_checked = _PROGRAM.decode_event, _PROGRAM.decode_event_checked
        _encode_current, _encode_event = _PROGRAM.encode, _EVENT_PROGRAM.encode
        _micros = avro_program.micros
        return True
    _read_current, _read_checked, _encode_current = _py_read, _py_read_checked, _py_encode
    _decode_event, _decode_event_checked = _py_decode_event, _py_decode_event_checked
    _encode_event, _micros = _py_encode_event, _py_micros
    return False


def implementation() -> str:
    """Which codec decodes and encodes the current schema, and why (for `--version`)."""
    if _read_current is not _py_read:
        return "compiled (C extension behest._cavro)"
    reason = avro_program.unavailable_reason() or "switched off by use_compiled(False)"
    return f"generated Python ({reason})"


# --- bytes ↔ EventRecord ----------------------------------------------------------------------


def encode_record(record: EventRecord) -> bytes:
    """Single-object encoding of a plain record (the shape `decode_record` returns)."""
    try:
        return _encode_current(_CURRENT_HEADER, record)
    except _ENCODE_ERRORS as error:
        raise CodecError(f"cannot encode record: {type(error).__name__}: {error}") from None


def writer_schema(data: bytes) -> SchemaVersion:
    """The schema version named by a single-object header; CodecError if there is none."""
    if len(data) < HEADER_SIZE:
        raise CodecError(
            f"truncated event: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    if data[:2] != MAGIC:
        raise CodecError(
            f"not an Avro single-object encoded event: starts with {data[:2].hex()}, "
            f"expected {MAGIC.hex()}"
        )
    return lookup(data[2:HEADER_SIZE])


def decode_record(data: bytes) -> EventRecord:
    """Decode single-object bytes to the plain record, under the current reader schema."""
    return _decode_event(data, _decode_other)


def _decode_other(data: bytes) -> EventRecord:
    """`decode_record` of what is not bytes with the current schema's header."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    if data[:HEADER_SIZE] == _CURRENT_HEADER:
        return _decode_current(data, HEADER_SIZE)
    return decode_body(data, writer_schema(data), HEADER_SIZE)


def decode_checked(data: bytes) -> EventRecord:
    """`decode_record` then `check_record`, in one pass when compiled: the record, or
    CodecError (corrupt bytes, or a record the model would refuse), as the two would."""
    return _decode_event_checked(data, _decode_other_checked)


def _decode_other_checked(data: bytes) -> EventRecord:
    if type(data) is not bytes:
        data = _as_bytes(data)
    if data[:HEADER_SIZE] == _CURRENT_HEADER:
        try:
            return _read_checked(data, HEADER_SIZE)
        except (IndexError, UnicodeDecodeError) as error:
            raise _corrupt(data, error) from None
    record = decode_body(data, writer_schema(data), HEADER_SIZE)
    check_record(record)
    return record


def _as_bytes(data: object) -> bytes:
    if data is None:
        raise CodecError("no event: the value is null (a tombstone deletes the run)")
    if not isinstance(data, bytearray | memoryview):
        raise CodecError(f"an event is bytes, not {type(data).__name__}")
    return bytes(data)


def decode_body(data: bytes, writer: SchemaVersion, offset: int = 0) -> EventRecord:
    """Decode the Avro body from `offset` to the end of `data`, written under `writer`,
    into the current schema's record shape (for framings other than single-object)."""
    if writer is CURRENT:
        return _decode_current(data, offset)
    return _decode_resolved(data, writer, offset)


def _decode_current(data: bytes, offset: int) -> EventRecord:
    try:
        return _read_current(data, offset)
    except (IndexError, UnicodeDecodeError) as error:
        raise _corrupt(data, error) from None


def _corrupt(data: bytes, error: IndexError | UnicodeDecodeError) -> CodecError:
    """The generated reader signals truncation by IndexError, bad UTF-8 by the decoder's."""
    if isinstance(error, UnicodeDecodeError):
        return CodecError(f"corrupt event: a string is not valid UTF-8 ({error.reason})")
    return CodecError(f"truncated event: the data ends after {len(data)} bytes, inside the record")


def _decode_resolved(data: bytes, writer: SchemaVersion, offset: int) -> EventRecord:
    """Read an older version's body through Avro schema resolution (fastavro)."""
    buffer = BytesIO(data)
    buffer.seek(offset)
    try:
        record = fastavro.schemaless_reader(
            buffer, writer.parsed, CURRENT.parsed, return_record_name=True
        )
    except Exception as error:  # fastavro raises many types for corrupt input
        raise CodecError(
            f"corrupt or truncated event (schema {writer.name}): {type(error).__name__}: {error}"
        ) from None
    if buffer.tell() != len(data):
        raise CodecError(
            f"corrupt event: {len(data) - buffer.tell()} bytes left over after the record"
        )
    return cast(EventRecord, record)


# --- AgentEvent ↔ EventRecord -----------------------------------------------------------------

_UUID_TO_JSON = TypeAdapter(uuid.UUID).serializer.to_python


def _uuid_text(value: uuid.UUID) -> str:
    """Canonical UUID text, formatted by pydantic-core: 4x faster than `str(UUID)`, which
    cost more than the rest of the envelope."""
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"expected a UUID, not {type(value).__name__} {value!r:.50}")
    return cast(str, _UUID_TO_JSON(value, mode="json"))


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


_ENCODED_RECORDS: tuple[type, ...] = (
    *PAYLOAD_TYPES,
    ToolCall,
    TokenUsage,
    ToolExecutionSuccess,
    ToolExecutionFailure,
    UnknownFinishReason,
)
_CLASSES = {f"{NAMESPACE}.{cls.__name__}": cls for cls in _ENCODED_RECORDS}
_PARAMS = ("run_text", "micros")
_FIELD_SOURCES: dict[str, avro_program.Source] = {
    "AgentEvent.event_id": _uuid_text,
    "AgentEvent.run_id": _PARAMS.index("run_text"),
    "AgentEvent.timestamp": _PARAMS.index("micros"),
    "RunStarted.session_id": _uuid_text,
    "RunStarted.metadata": _json_text,
    "ToolCall.arguments": _json_text,
    "ToolExecutionSuccess.output": _json_text,
    "AssistantMessageCommitted.message_id": _uuid_text,
    "ToolMessageCommitted.message_id": _uuid_text,
}
_SOURCES = {f"{NAMESPACE}.{field}": source for field, source in _FIELD_SOURCES.items()}
"""Where an `AgentEvent`'s writer takes a record field: a model field is the record field
of the same name, except these: converted by a function, or an argument of the writer."""


def _expression(source: avro_program.Source) -> str:
    if isinstance(source, int):
        return _PARAMS[source]
    return f"{getattr(source, '__name__', '')}({{0}}.{{1}})"


_write_event: Callable[[bytearray, AgentEvent, str, int], None] = compile_object_writer(
    CURRENT.parsed,
    classes=_CLASSES,
    fields={field: _expression(source) for field, source in _SOURCES.items()},
    params=_PARAMS,
    helpers={"_uuid_text": _uuid_text, "_json_text": _json_text},
)
"""Writes an `AgentEvent` straight from the models' attributes (no plain record in
between); `_EVENT_PROGRAM` is the same in C."""
_EVENT_PROGRAM = avro_program.load(
    CURRENT.parsed, classes=_CLASSES, sources=_SOURCES, uuid_text=_uuid_text
)


def _py_micros(moment: datetime, epoch: datetime, unit: timedelta) -> int:
    return (moment - epoch) // unit


_micros: Callable[[datetime, datetime, timedelta], int] = _py_micros
"""`(moment - EPOCH) // MICROSECOND`, in C when compiled (a third of encode's time)."""


def _py_encode_event(prefix: bytes, event: AgentEvent, run_text: str, micros: int) -> bytes:
    out = bytearray(prefix)
    _write_event(out, event, run_text, micros)
    return bytes(out)


_encode_event: Callable[[bytes, AgentEvent, str, int], bytes] = _py_encode_event


def encode_body(event: AgentEvent) -> bytes:
    """The Avro binary body of an event under the current schema, without any header."""
    return _encode(b"", event)


def encode(event: AgentEvent) -> bytes:
    """Avro single-object encoding of an event under the current schema."""
    return _encode(_CURRENT_HEADER, event)


def encode_stamped(event: AgentEvent, run_text: str) -> tuple[bytes, int]:
    """`encode(event)` and the event's time in µs since the epoch, for producers: they
    key records by the run id's text (`run_text`, cached per run, saves converting it
    twice) and stamp them with the event's time (computed once here)."""
    try:
        micros = _micros(event.timestamp, EPOCH, MICROSECOND)
        return _encode_event(_CURRENT_HEADER, event, run_text, micros), micros
    except (CodecError, *_ENCODE_ERRORS) as error:
        raise _encode_error(event, error) from None


def _encode(prefix: bytes, event: AgentEvent) -> bytes:
    try:
        run_text = _uuid_text(event.run_id)
        micros = _micros(event.timestamp, EPOCH, MICROSECOND)
        return _encode_event(prefix, event, run_text, micros)
    except (CodecError, *_ENCODE_ERRORS) as error:
        raise _encode_error(event, error) from None


def _encode_error(event: AgentEvent, error: Exception) -> CodecError:
    what = f"{type(getattr(event, 'payload', None)).__name__} event"
    reason = error if isinstance(error, CodecError) else f"{type(error).__name__}: {error}"
    return CodecError(
        f"cannot encode {what} {getattr(event, 'event_id', '?')}: {reason} (a field holds "
        "a value its type does not allow; model_construct skips pydantic's checks)"
    )


def _from_run_started(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "type": "RunStarted", "metadata": json_value(fields["metadata"], "metadata")}


def _from_tool_call_completed(fields: dict[str, Any]) -> dict[str, Any]:
    call = fields["call"]
    arguments = json_value(call["arguments"], "ToolCall.arguments")
    return {"type": "ToolCallCompleted", "call": {**call, "arguments": arguments}}


def _from_tool_execution_finished(fields: dict[str, Any]) -> dict[str, Any]:
    name, result = fields["result"]
    if name == f"{NAMESPACE}.ToolExecutionSuccess":
        result = {"output": json_value(result["output"], "ToolExecutionSuccess.output")}
    return {**fields, "type": "ToolExecutionFinished", "result": result}


def _from_run_completed(fields: dict[str, Any]) -> dict[str, Any]:
    reason = fields["finish_reason"]
    if type(reason) is tuple:
        reason = reason[1]
    return {**fields, "type": "RunCompleted", "finish_reason": reason}


def _plain(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def adapt(fields: dict[str, Any]) -> dict[str, Any]:
        return {**fields, "type": name}

    return adapt


_FROM_FIELDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    f"{NAMESPACE}.{cls.__name__}": _plain(cls.__name__) for cls in PAYLOAD_TYPES
} | {
    f"{NAMESPACE}.RunStarted": _from_run_started,
    f"{NAMESPACE}.ToolCallCompleted": _from_tool_call_completed,
    f"{NAMESPACE}.ToolExecutionFinished": _from_tool_execution_finished,
    f"{NAMESPACE}.RunCompleted": _from_run_completed,
}
"""Per variant: the record's fields as pydantic input (JSON parsed, union tuples unwrapped)."""


def to_event(record: EventRecord) -> AgentEvent:
    """Build the validated `AgentEvent` of a decoded record. Validation in pydantic-core
    is faster than `model_construct`, and catches values the schema allows but the model
    does not (a negative sequence, an id that is not a UUID)."""
    try:
        name, fields = record["payload"]
        adapt = _FROM_FIELDS.get(name)
        if adapt is None:
            raise CodecError(f"unknown event variant {name!r}")
        return AgentEvent.model_validate(
            {
                "event_id": record["event_id"],
                "run_id": record["run_id"],
                "sequence": record["sequence"],
                "timestamp": EPOCH + MICROSECOND * record["timestamp"],
                "payload": adapt(fields),
            }
        )
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise CodecError(f"event does not fit the model: {problems}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise CodecError(f"not an event record: {type(error).__name__}: {error}") from None
    except OverflowError:
        raise CodecError(
            f"timestamp {record['timestamp']} µs is outside the years 1 to 9999"
        ) from None


def decode(data: bytes) -> AgentEvent:
    """Decode single-object bytes into a validated `AgentEvent`."""
    return to_event(decode_record(data))


# --- what the model demands beyond the schema -------------------------------------------------


use_compiled()  # at import: the compiled codec where it is built
