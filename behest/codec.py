"""Avro single-object encoding of `AgentEvent`s: `C3 01`, 8-byte fingerprint, Avro body.

Schemas in `schemas/` are parsed once, at import, into a registry keyed by the
CRC-64-AVRO fingerprint (little-endian) of their Parsing Canonical Form. Decoding
resolves any known writer schema to the current reader schema, so every event ever
written stays readable. Three steps, each usable on its own::

    bytes ──decode_record──► EventRecord ──to_event──► AgentEvent
    bytes ◄──encode_record── EventRecord
    bytes ◄──encode───────────────────────────────── AgentEvent

`EventRecord` is the plain Avro record (see `behest.events.EventRecord`): nested
unions of records come as `(full name, fields)` tuples, like the payload itself
(`result` of `ToolExecutionFinished`; `finish_reason` of `RunCompleted`, whose known
reasons are plain strings), and JSON-valued fields stay JSON text. JSON text follows
orjson: integers beyond 64 bits cannot be encoded, and non-finite floats become `null`.

Speed: fastavro interprets the schema for every event. The projector's hot path
decodes millions of events, so the current schema is compiled, once, into two
straight-line Python functions (`_compile_reader`, `_compile_writer`), about twice
as fast; events written under an older schema take fastavro's schema resolution.
Tests check the compiled code against fastavro and the Apache `avro` package.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from itertools import count
from pathlib import Path
from typing import Any, Protocol, cast

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import TypeAdapter, ValidationError

from behest.errors import CodecError, IncompatibleSchemaError, UnknownSchemaError
from behest.events import (
    PAYLOAD_TYPES,
    AgentEvent,
    AssistantMessageCommitted,
    EventRecord,
    RunCompleted,
    RunStarted,
    ToolCallCompleted,
    ToolExecutionFinished,
    ToolExecutionSuccess,
    ToolMessageCommitted,
    UnknownFinishReason,
    UsageRecorded,
    Variant,
)
from behest.times import EPOCH, MICROSECOND

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
NAMESPACE = "behest"
CURRENT_SCHEMA_FILE = "agent_event.avsc"


def _schema_dir() -> Path:
    """`schemas/` beside the package in a source checkout, inside it once installed."""
    here = Path(__file__).resolve().parent
    installed = here / "schemas"
    return installed if (installed / CURRENT_SCHEMA_FILE).exists() else here.parent / "schemas"


SCHEMA_DIR = _schema_dir()


def _strip_logical_types(node: Any) -> Any:
    """The same schema without logicalType annotations: identical wire format, and
    fastavro then hands us text and integers instead of converting (half its cost)."""
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def schema_fingerprint(schema: str | dict[str, Any]) -> bytes:
    """The 8 header bytes for a schema: CRC-64-AVRO of its Parsing Canonical Form,
    little-endian. Logical-typed primitives reduce to their simple form (`"string"`),
    as Java, Rust and fastavro compute it."""
    raw = json.loads(schema) if isinstance(schema, str) else schema
    canonical = to_parsing_canonical_form(fastavro.parse_schema(raw, _write_hint=False))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))  # hex of the LE bytes


@dataclass(frozen=True)
class SchemaVersion:
    """One writer schema (a `schemas/*.avsc` file, or one published on `<topic>.schemas`):
    its raw and parsed (logical-type-free) forms and fingerprint."""

    name: str
    raw: dict[str, Any]
    parsed: dict[str, Any]
    fingerprint: bytes
    published: bool = False
    """Added at run time (published on a schemas topic), not shipped in `schemas/`."""

    @classmethod
    def load(cls, path: Path) -> SchemaVersion:
        return cls.from_json(path.name, json.loads(path.read_text()))

    @classmethod
    def from_json(cls, name: str, raw: dict[str, Any], *, published: bool = False) -> SchemaVersion:
        parsed = cast(dict[str, Any], fastavro.parse_schema(_strip_logical_types(raw)))
        return cls(name, raw, parsed, schema_fingerprint(raw), published)

    def record(self) -> tuple[bytes, bytes]:
        """Its record on `<topic>.schemas`: key = the 8 header bytes as 16 lowercase hex
        characters, value = the schema's JSON text (UTF-8)."""
        return self.fingerprint.hex().encode(), json.dumps(self.raw, separators=(",", ":")).encode()


def _load_registry(schema_dir: Path) -> tuple[SchemaVersion, dict[bytes, SchemaVersion]]:
    current = SchemaVersion.load(schema_dir / CURRENT_SCHEMA_FILE)
    versions = {current.fingerprint: current}
    for path in sorted(schema_dir.glob("agent_event.v*.avsc")):
        version = SchemaVersion.load(path)
        versions.setdefault(version.fingerprint, version)
    return current, versions


CURRENT, VERSIONS = _load_registry(SCHEMA_DIR)
"""The current (reader) schema, and every known writer schema by fingerprint (the files of
`schemas/`, then those added at run time by `add_writer_schema`)."""
REFUSED: dict[bytes, str] = {}
"""Writer schemas seen and refused, by fingerprint: why the current schema cannot read them."""


class SchemaSource(Protocol):
    """Somewhere writer schemas are kept (a projection's store): asked on an unknown one."""

    def get_schema(self, fingerprint: bytes) -> bytes | None: ...


_SOURCES: weakref.WeakSet[SchemaSource] = weakref.WeakSet()
_uses = threading.local()


def on_published_schema(callback: Callable[[SchemaVersion], None] | None) -> None:
    """Call `callback` (in this thread) for each event decoded with a published writer
    schema: the projector keeps such schemas in its store, beside the events that need them."""
    _uses.callback = callback


def add_schema_source(source: SchemaSource) -> None:
    """Ask `source` for writer schemas the registry lacks (held weakly: it may go away)."""
    _SOURCES.add(source)


def add_writer_schema(text: str | bytes | dict[str, Any], origin: str = "") -> SchemaVersion:
    """Register a writer schema (its JSON, full or Parsing Canonical Form) so events written
    with it decode. `IncompatibleSchemaError` (and remembered in `REFUSED`) when the current
    schema cannot read what it writes; `CodecError` when it is not an AgentEvent schema."""
    from behest.compat import incompatibilities

    try:
        raw = json.loads(text) if isinstance(text, str | bytes) else text
        version = SchemaVersion.from_json(origin or "published", raw, published=True)
    except Exception as error:  # json and fastavro raise many kinds for bad schemas
        raise CodecError(
            f"not an Avro schema{f' ({origin})' if origin else ''}: {type(error).__name__}: {error}"
        ) from None
    known = VERSIONS.get(version.fingerprint)
    if known is not None:
        return known
    problems = incompatibilities(version.parsed, CURRENT.parsed)
    if problems:
        reason = (
            f"writer schema {version.fingerprint.hex()}{f' ({origin})' if origin else ''} is "
            f"incompatible with behest's {CURRENT.name}: {'; '.join(problems)}"
        )
        REFUSED[version.fingerprint] = reason
        raise IncompatibleSchemaError(reason)
    VERSIONS[version.fingerprint] = version
    return version


def header_fingerprint(data: bytes | None) -> bytes | None:
    """The 8 fingerprint bytes of a single-object encoded value, if it has the header."""
    if data is None or len(data) < HEADER_SIZE or data[:2] != MAGIC:
        return None
    return bytes(data[2:HEADER_SIZE])


def _from_sources(fp: bytes) -> SchemaVersion | None:
    for source in list(_SOURCES):
        try:
            text = source.get_schema(fp)
        except Exception:  # noqa: S112 - a source that cannot answer (closed) is passed over
            continue
        if text is not None:
            with contextlib.suppress(CodecError):
                return add_writer_schema(text, "from the projection's store")
    return None


def _union_records(node: Any, namespace: str = "") -> set[str]:
    """Full names of the records that are branches of a union anywhere in a schema."""
    found: set[str] = set()
    if isinstance(node, list):
        for branch in node:
            if isinstance(branch, dict) and branch.get("type") == "record":
                found.add(f"{branch.get('namespace', namespace)}.{branch['name']}")
            found |= _union_records(branch, namespace)
    elif isinstance(node, dict):
        inner = node.get("namespace", namespace)
        for value in node.values():
            found |= _union_records(value, inner)
    return found


def _check_variants(version: SchemaVersion) -> None:
    """`behest.events.Variant` names exactly the union branches of the current schema."""
    in_schema = _union_records(version.raw)
    known = {v.value for v in Variant}
    if in_schema != known:
        raise CodecError(
            f"{version.name} and behest.events.Variant disagree: only in the schema "
            f"{sorted(in_schema - known)}, only in Variant {sorted(known - in_schema)}; "
            "add each union branch to Variant (and its model to behest.events)"
        )


_check_variants(CURRENT)


# --- compiling a schema into Python ---------------------------------------------------------
#
# Each emitter appends the statements that read (or write) one value of a schema node.
# Readers advance `pos` in `buf` (length `size`) and assign the value to `target`;
# writers append the value of the expression `value` to the bytearray `out`.
# Truncation surfaces as IndexError and bad UTF-8 as UnicodeDecodeError; the callers
# turn both into CodecError. Everything else is checked by the generated code.

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


class _Source:
    """Generated lines, fresh local names and the constants the code refers to."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.named: dict[str, Any] = schema["__named_schemas"]
        self._names: Iterator[int] = count()
        self.expanding: list[str] = []

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)

    def local(self) -> str:
        return f"v{next(self._names)}"

    def constant(self, value: Any) -> str:
        name = f"_K{len(self.constants)}"
        self.constants[name] = value
        return name

    def resolve(self, node: Any) -> tuple[str, Any]:
        """The kind of a schema node (`record`, `union`, `long`, ...) and its definition."""
        if isinstance(node, list):
            return "union", node
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node, node
            if node in self.expanding:
                raise NotImplementedError(f"recursive type {node} is not supported by the codec")
            node = self.named[node]
        return node["type"], node

    def function(self, name: str, helpers: dict[str, Any]) -> Callable[..., Any]:
        namespace = {**helpers, **self.constants}
        code = compile("\n".join(self.lines), f"<behest.codec {name}>", "exec")
        exec(code, namespace)  # noqa: S102 -- source generated from our own schema files
        return cast(Callable[..., Any], namespace[name])


_SHIFTS = tuple(range(7, 64, 7))


def _read_long_tail(buf: bytes, pos: int, byte: int) -> tuple[int, int]:
    """Finish a zigzag varint whose first byte had the continuation bit (at most 10 bytes)."""
    value = byte & 0x7F
    for shift in _SHIFTS:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 64:
                raise CodecError(f"corrupt event: the varint ending at byte {pos} exceeds 64 bits")
            return (value >> 1) ^ -(value & 1), pos
    raise CodecError(f"corrupt event: the varint ending at byte {pos} is longer than 10 bytes")


def _bad_length(length: int, pos: int, size: int, path: str) -> None:
    raise CodecError(
        f"corrupt or truncated event: {path} declares {length} bytes at byte {pos}, "
        f"but only {size - pos} remain"
    )


def _bad_index(index: int, branches: int, path: str) -> None:
    raise CodecError(
        f"corrupt event: {path} has index {index}, but the schema has only {branches} "
        f"choices (0 to {branches - 1})"
    )


def _bad_boolean(byte: int, path: str) -> None:
    raise CodecError(f"corrupt event: {path} is a boolean but its byte is {byte}")


def _short(path: str) -> None:
    raise IndexError(path)


_READ_HELPERS = {
    "_read_long_tail": _read_long_tail,
    "_bad_length": _bad_length,
    "_bad_index": _bad_index,
    "_bad_boolean": _bad_boolean,
    "_short": _short,
    "_FLOAT": _FLOAT,
    "_DOUBLE": _DOUBLE,
}


def _emit_read_long(src: _Source, target: str, ind: int) -> None:
    src.add(
        ind,
        "b = buf[pos]",
        "pos += 1",
        "if b < 128:",
        f"    {target} = (b >> 1) ^ -(b & 1)",
        "else:",
        f"    {target}, pos = _read_long_tail(buf, pos, b)",
    )


def _emit_read(src: _Source, node: Any, target: str, ind: int, path: str) -> None:
    kind, node = src.resolve(node)
    if kind in ("int", "long"):
        _emit_read_long(src, target, ind)
    elif kind in ("string", "bytes"):
        _emit_read_long(src, "n", ind)
        decode = ".decode()" if kind == "string" else ""
        src.add(
            ind,
            "end = pos + n",
            "if n < 0 or end > size:",
            f"    _bad_length(n, pos, size, {path!r})",
            f"{target} = buf[pos:end]{decode}",
            "pos = end",
        )
    elif kind == "null":
        src.add(ind, f"{target} = None")
    elif kind == "boolean":
        src.add(
            ind,
            "b = buf[pos]",
            "pos += 1",
            "if b > 1:",
            f"    _bad_boolean(b, {path!r})",
            f"{target} = b == 1",
        )
    elif kind in ("float", "double"):
        fmt, width = ("_FLOAT", 4) if kind == "float" else ("_DOUBLE", 8)
        src.add(
            ind,
            f"if pos + {width} > size:",
            f"    _short({path!r})",
            f"{target}, = {fmt}.unpack_from(buf, pos)",
            f"pos += {width}",
        )
    elif kind == "enum":
        symbols = src.constant(tuple(node["symbols"]))
        _emit_read_long(src, "i", ind)
        src.add(
            ind,
            f"if not 0 <= i < {len(node['symbols'])}:",
            f"    _bad_index(i, {len(node['symbols'])}, {path!r})",
            f"{target} = {symbols}[i]",
        )
    elif kind == "record":
        src.expanding.append(node["name"])
        values = []
        for field in node["fields"]:
            local = src.local()
            _emit_read(src, field["type"], local, ind, f"{node['name']}.{field['name']}")
            values.append(f"{field['name']!r}: {local}")
        src.expanding.pop()
        src.add(ind, f"{target} = {{{', '.join(values)}}}")
    elif kind == "union":
        _emit_read_long(src, "i", ind)
        for index, branch in enumerate(node):
            src.add(ind, f"{'if' if index == 0 else 'elif'} i == {index}:")
            branch_kind, definition = src.resolve(branch)
            if branch_kind == "record":
                local = src.local()
                _emit_read(src, branch, local, ind + 1, path)
                src.add(ind + 1, f"{target} = ({definition['name']!r}, {local})")
            else:
                _emit_read(src, branch, target, ind + 1, path)
        src.add(ind, "else:", f"    _bad_index(i, {len(node)}, {path!r})")
    else:
        raise NotImplementedError(f"Avro type {kind!r} ({path}) is not supported by the codec")


def _compile_reader(schema: dict[str, Any]) -> Callable[[bytes, int], tuple[Any, int]]:
    """`read(buf, pos) -> (value, end)` for a parsed, logical-type-free schema."""
    src = _Source(schema)
    src.add(0, "def read(buf, pos):", "    size = len(buf)")
    _emit_read(src, schema, "value", 1, schema["name"])
    src.add(1, "return value, pos")
    return src.function("read", _READ_HELPERS)


def _put_varint(out: bytearray, zigzag: int, value: int, bits: int, path: str) -> None:
    """Append a zigzag-encoded value of at least one byte, after checking its range."""
    if not 0 <= zigzag < 1 << bits:
        raise CodecError(f"{path} = {value} does not fit an Avro {bits}-bit integer")
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)


def _not_a(expected: str, value: Any, path: str) -> None:
    raise CodecError(f"{path} must be {expected}, not {type(value).__name__} {value!r:.80}")


_WRITE_HELPERS = {
    "_put_varint": _put_varint,
    "_not_a": _not_a,
    "_FLOAT": _FLOAT,
    "_DOUBLE": _DOUBLE,
}


def _emit_write_long(src: _Source, value: str, ind: int, bits: int, path: str) -> None:
    src.add(
        ind,
        f"z = ({value} << 1) ^ ({value} >> {bits - 1})",
        "if 0 <= z < 128:",
        "    out.append(z)",
        "else:",
        f"    _put_varint(out, z, {value}, {bits}, {path!r})",
    )


def _emit_write(src: _Source, node: Any, value: str, ind: int, path: str) -> None:
    kind, node = src.resolve(node)
    if kind in ("int", "long"):
        _emit_write_long(src, value, ind, 32 if kind == "int" else 64, path)
    elif kind in ("string", "bytes"):
        data = src.local()
        if kind == "string":
            src.add(ind, f"{data} = {value}.encode()")
        else:
            src.add(
                ind,
                f"if not isinstance({value}, (bytes, bytearray)):",
                f"    _not_a('bytes', {value}, {path!r})",
                f"{data} = {value}",
            )
        src.add(ind, f"n = len({data})")
        _emit_write_long(src, "n", ind, 64, path)
        src.add(ind, f"out += {data}")
    elif kind == "null":
        src.add(ind, f"if {value} is not None:", f"    _not_a('None', {value}, {path!r})")
    elif kind == "boolean":
        src.add(
            ind,
            f"if {value} is True:",
            "    out.append(1)",
            f"elif {value} is False:",
            "    out.append(0)",
            "else:",
            f"    _not_a('a bool', {value}, {path!r})",
        )
    elif kind in ("float", "double"):
        src.add(ind, f"out += {'_FLOAT' if kind == 'float' else '_DOUBLE'}.pack({value})")
    elif kind == "enum":
        indexes = src.constant({symbol: i for i, symbol in enumerate(node["symbols"])})
        src.add(
            ind,
            f"i = {indexes}.get({value})",
            "if i is None:",
            f"    _not_a('one of {', '.join(node['symbols'])}', {value}, {path!r})",
        )
        _emit_write_long(src, "i", ind, 64, path)
    elif kind == "record":
        src.expanding.append(node["name"])
        for field in node["fields"]:
            local = src.local()
            src.add(ind, f"{local} = {value}[{field['name']!r}]")
            _emit_write(src, field["type"], local, ind, f"{node['name']}.{field['name']}")
        src.expanding.pop()
    elif kind == "union":
        _emit_write_union(src, node, value, ind, path)
    else:
        raise NotImplementedError(f"Avro type {kind!r} ({path}) is not supported by the codec")


def _emit_write_union(src: _Source, branches: list[Any], value: str, ind: int, path: str) -> None:
    """A record branch is chosen by the name in a `(name, fields)` tuple, the null branch
    by None, and the one other branch (if any) by anything else."""
    records, plain = [], []
    for index, branch in enumerate(branches):
        kind, definition = src.resolve(branch)
        if kind == "record":
            records.append((index, definition))
        else:
            plain.append((index, kind, branch))
    null = [entry for entry in plain if entry[1] == "null"]
    other = [entry for entry in plain if entry[1] != "null"]
    if len(other) > 1:
        raise NotImplementedError(f"{path}: unions with several non-record branches")
    keyword = "if"
    if records:
        name, fields = src.local(), src.local()
        src.add(ind, f"if type({value}) is tuple:", f"    {name}, {fields} = {value}")
        for position, (index, definition) in enumerate(records):
            src.add(
                ind + 1, f"{'if' if position == 0 else 'elif'} {name} == {definition['name']!r}:"
            )
            src.add(ind + 2, f"out.append({index << 1})")
            _emit_write(src, definition, fields, ind + 2, path)
        src.add(ind + 1, "else:")
        expected = f"a branch of {path}: " + ", ".join(d["name"] for _, d in records)
        src.add(ind + 2, f"_not_a({expected!r}, {name}, {path!r})")
        keyword = "elif"
    if null:
        src.add(ind, f"{keyword} {value} is None:", f"    out.append({null[0][0] << 1})")
        keyword = "elif"
    if keyword == "if":  # only the one plain branch
        src.add(ind, f"out.append({other[0][0] << 1})")
        _emit_write(src, other[0][2], value, ind, path)
        return
    src.add(ind, "else:")
    if other:
        src.add(ind + 1, f"out.append({other[0][0] << 1})")
        _emit_write(src, other[0][2], value, ind + 1, path)
    else:
        src.add(ind + 1, f"_not_a('a (name, fields) tuple', {value}, {path!r})")


def _compile_writer(schema: dict[str, Any]) -> Callable[[bytearray, Any], None]:
    """`write(out, value)`, appending the Avro binary form of `value` to `out`."""
    src = _Source(schema)
    src.add(0, "def write(out, value):")
    _emit_write(src, schema, "value", 1, schema["name"])
    return src.function("write", _WRITE_HELPERS)


_read_current = _compile_reader(CURRENT.parsed)
_write_current = _compile_writer(CURRENT.parsed)
_CURRENT_HEADER = MAGIC + CURRENT.fingerprint
_ENCODE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, OverflowError, struct.error)


# --- bytes ↔ EventRecord ----------------------------------------------------------------------


def encode_record(record: EventRecord) -> bytes:
    """Single-object encoding of a plain record (the shape `decode_record` returns)."""
    out = bytearray(_CURRENT_HEADER)
    try:
        _write_current(out, record)
    except _ENCODE_ERRORS as error:
        raise CodecError(f"cannot encode record: {type(error).__name__}: {error}") from None
    return bytes(out)


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
    fp = data[2:HEADER_SIZE]
    version = VERSIONS.get(fp)
    if version is None:
        refused = REFUSED.get(fp)
        if refused is not None:
            raise IncompatibleSchemaError(refused)
        version = _from_sources(fp) if _SOURCES else None
        if version is None:
            raise UnknownSchemaError(
                f"unknown writer schema fingerprint {fp.hex()}: its producer did not publish "
                "it to the <topic>.schemas topic (schemas/README.md says how), or this is "
                "not a behest event; after publishing it, send the dead letter back with "
                "`behest dlq replay`"
            )
    if version.published:
        callback = getattr(_uses, "callback", None)
        if callback is not None:
            callback(version)
    return version


def decode_record(data: bytes) -> EventRecord:
    """Decode single-object bytes to the plain record, under the current reader schema."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    if data[:HEADER_SIZE] == _CURRENT_HEADER:
        return _decode_current(data, HEADER_SIZE)
    return decode_body(data, writer_schema(data), HEADER_SIZE)


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
        record, end = _read_current(data, offset)
    except IndexError:
        raise CodecError(
            f"truncated event: the data ends after {len(data)} bytes, inside the record"
        ) from None
    except UnicodeDecodeError as error:
        raise CodecError(f"corrupt event: a string is not valid UTF-8 ({error.reason})") from None
    if end != len(data):
        raise CodecError(f"corrupt event: {len(data) - end} bytes left over after the record")
    return cast(EventRecord, record)


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

_FULL_NAMES = {cls: f"{NAMESPACE}.{cls.__name__}" for cls in PAYLOAD_TYPES}
_UUID_TO_JSON = TypeAdapter(uuid.UUID).serializer.to_python


def _uuid_text(value: uuid.UUID) -> str:
    """Canonical UUID text, formatted by pydantic-core: 4x faster than `str(UUID)`, which
    cost more than the rest of the envelope."""
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"expected a UUID, not {type(value).__name__} {value!r:.50}")
    return cast(str, _UUID_TO_JSON(value, mode="json"))


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _run_started(p: RunStarted) -> dict[str, Any]:
    return {
        "session_id": _uuid_text(p.session_id),
        "provider": p.provider,
        "model": p.model,
        "metadata": _json_text(p.metadata),
    }


def _tool_call_completed(p: ToolCallCompleted) -> dict[str, Any]:
    call = p.call
    return {"call": {"id": call.id, "name": call.name, "arguments": _json_text(call.arguments)}}


def _tool_execution_finished(p: ToolExecutionFinished) -> dict[str, Any]:
    result = p.result
    if type(result) is ToolExecutionSuccess:
        branch = (f"{NAMESPACE}.ToolExecutionSuccess", {"output": _json_text(result.output)})
    else:
        branch = (f"{NAMESPACE}.{type(result).__name__}", vars(result))
    return {
        "call_id": p.call_id,
        "tool_name": p.tool_name,
        "result": branch,
        "duration_ms": p.duration_ms,
    }


def _message_committed(p: AssistantMessageCommitted | ToolMessageCommitted) -> dict[str, Any]:
    return {"message_id": _uuid_text(p.message_id)}


def _usage_recorded(p: UsageRecorded) -> dict[str, Any]:
    return {"usage": vars(p.usage)}


def _run_completed(p: RunCompleted) -> dict[str, Any]:
    reason: Any = p.finish_reason
    if type(reason) is UnknownFinishReason:
        reason = (f"{NAMESPACE}.UnknownFinishReason", {"unknown": reason.unknown})
    return {"finish_reason": reason, "iterations": p.iterations}


_TO_FIELDS: dict[type[Any], Callable[[Any], dict[str, Any]]] = {
    RunStarted: _run_started,
    ToolCallCompleted: _tool_call_completed,
    ToolExecutionFinished: _tool_execution_finished,
    AssistantMessageCommitted: _message_committed,
    ToolMessageCommitted: _message_committed,
    UsageRecorded: _usage_recorded,
    RunCompleted: _run_completed,
}
"""Variants with UUIDs, JSON, nested models or unions. The others' fields are their
attributes as they are (the writer ignores the extra `type` key)."""


def _record_of(event: AgentEvent) -> dict[str, Any]:
    payload = event.payload
    cls = type(payload)
    convert = _TO_FIELDS.get(cls)
    return {
        "event_id": _uuid_text(event.event_id),
        "run_id": _uuid_text(event.run_id),
        "sequence": event.sequence,
        "timestamp": (event.timestamp - EPOCH) // MICROSECOND,
        "payload": (_FULL_NAMES[cls], vars(payload) if convert is None else convert(payload)),
    }


def encode_body(event: AgentEvent) -> bytes:
    """The Avro binary body of an event under the current schema, without any header."""
    return bytes(_encode(bytearray(), event))


def encode(event: AgentEvent) -> bytes:
    """Avro single-object encoding of an event under the current schema."""
    return bytes(_encode(bytearray(_CURRENT_HEADER), event))


def _encode(out: bytearray, event: AgentEvent) -> bytearray:
    try:
        _write_current(out, _record_of(event))
    except (CodecError, *_ENCODE_ERRORS) as error:
        what = f"{type(getattr(event, 'payload', None)).__name__} event"
        reason = error if isinstance(error, CodecError) else f"{type(error).__name__}: {error}"
        raise CodecError(
            f"cannot encode {what} {getattr(event, 'event_id', '?')}: {reason} (a field holds "
            "a value its type does not allow; model_construct skips pydantic's checks)"
        ) from None
    return out


def _json_value(text: str, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise CodecError(f"{where} is not valid JSON text ({error}): {text!r:.80}") from None


def _from_run_started(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "type": "RunStarted", "metadata": _json_value(fields["metadata"], "metadata")}


def _from_tool_call_completed(fields: dict[str, Any]) -> dict[str, Any]:
    call = fields["call"]
    arguments = _json_value(call["arguments"], "ToolCall.arguments")
    return {"type": "ToolCallCompleted", "call": {**call, "arguments": arguments}}


def _from_tool_execution_finished(fields: dict[str, Any]) -> dict[str, Any]:
    name, result = fields["result"]
    if name == f"{NAMESPACE}.ToolExecutionSuccess":
        result = {"output": _json_value(result["output"], "ToolExecutionSuccess.output")}
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

MAX_JSON_DEPTH = 128
"""JSON values nest at most this deep: a reader validates and serializes them recursively,
and pydantic and orjson stop near 255 levels (with the envelope around them)."""

_MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - EPOCH) // MICROSECOND
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // MICROSECOND
_UUID = TypeAdapter(uuid.UUID)
_CANONICAL_UUID = re.compile("-".join(f"[0-9a-f]{{{n}}}" for n in (8, 4, 4, 4, 12))).fullmatch


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
    value = _json_value(text, where)
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
