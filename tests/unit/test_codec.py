"""The Avro codec: round trips, agreement with fastavro and Apache `avro`, bad input,
and the optional Confluent framing."""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
import uuid
from datetime import UTC, datetime
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behest import avro_reader, avro_writer, codec, writer_schemas
from behest.errors import CodecError, UnknownSchemaError
from behest.events import (
    PAYLOAD_TYPES,
    AgentEvent,
    RunCompleted,
    RunId,
    RunStarted,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallCompleted,
    ToolExecutionFinished,
    ToolExecutionSuccess,
    UsageRecorded,
)
from tests.unit import strategies

pytestmark = pytest.mark.usefixtures("codec_path")
"""Every test here runs under the compiled codec and the generated Python one."""

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""No timing health checks: a shared, loaded machine must not fail a correct property."""

SAMPLES = strategies.sample_events()
HEADER = codec.MAGIC + codec.CURRENT.fingerprint
RUN = RunId(uuid.UUID("3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00"))


def fastavro_read(body: bytes, schema: dict[str, Any] = codec.CURRENT.parsed) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), schema, None, return_record_name=True)


def fastavro_write(record: Any, schema: dict[str, Any] = codec.CURRENT.parsed) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def envelope(payload_index: int, payload_body: bytes) -> bytes:
    """A hand-built event: our header, a fixed envelope, then a raw payload."""
    uuid_text = b"\x48" + str(RUN).encode()
    return HEADER + uuid_text + uuid_text + b"\x00\x00" + bytes([payload_index << 1]) + payload_body


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", PAYLOAD_TYPES, ids=lambda cls: cls.__name__)
@settings(RELAXED, max_examples=20)
@given(data=st.data())
def test_every_variant_round_trips(variant: type[Any], data: st.DataObject) -> None:
    event = data.draw(strategies.agent_events(payload=strategies.payloads(variant)))
    encoded = codec.encode(event)
    assert encoded[: codec.HEADER_SIZE] == HEADER
    assert codec.decode(encoded) == event
    assert codec.encode_record(codec.decode_record(encoded)) == encoded


@settings(RELAXED, max_examples=150)
@given(strategies.events())
def test_compiled_codec_agrees_with_fastavro(event: AgentEvent) -> None:
    encoded = codec.encode(event)
    record = codec.decode_record(encoded)
    assert fastavro_read(encoded[codec.HEADER_SIZE :]) == record
    assert fastavro_write(record) == encoded[codec.HEADER_SIZE :]


def test_encode_body_is_the_encoding_without_its_header() -> None:
    for event in SAMPLES:
        assert HEADER + codec.encode_body(event) == codec.encode(event)


def test_decode_record_has_the_documented_shape() -> None:
    by_type = {event.type: codec.decode_record(codec.encode(event)) for event in SAMPLES}
    usage = by_type["UsageRecorded"]
    assert usage == {
        "event_id": "00000000-0000-0000-0000-00000000000d",
        "run_id": str(RUN),
        "sequence": 12,
        "timestamp": 1_795_183_387_135_456,
        "payload": (
            "behest.UsageRecorded",
            {"usage": {"input_tokens": 1200, "output_tokens": 345, "total_tokens": 1545}},
        ),
    }
    assert by_type["RunStarted"]["payload"][1]["metadata"] == (
        '{"user":"ada","tags":["a","b"],"n":1.5}'
    )
    assert by_type["RunCompleted"]["payload"][1]["finish_reason"] == (
        "behest.UnknownFinishReason",
        {"unknown": "max_turns"},
    )


def test_known_finish_reason_is_a_plain_enum_symbol() -> None:
    event = SAMPLES[13]
    assert isinstance(event.payload, RunCompleted)
    assert codec.decode_record(codec.encode(event))["payload"][1]["finish_reason"] == "stop"


def test_timestamps_at_the_ends_of_pythons_range_survive() -> None:
    for moment in (strategies.MIN_TIME, strategies.MAX_TIME, datetime(1969, 12, 31, tzinfo=UTC)):
        event = AgentEvent(run_id=RUN, sequence=0, timestamp=moment, payload=TextDelta(delta=""))
        assert codec.decode(codec.encode(event)).timestamp == moment


def test_decode_accepts_bytearray_and_memoryview() -> None:
    encoded = codec.encode(SAMPLES[3])
    assert codec.decode(bytearray(encoded)) == SAMPLES[3]
    assert codec.decode(memoryview(encoded)) == SAMPLES[3]  # type: ignore[arg-type]


# --- a second, independent Avro implementation ---------------------------------------------------


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification writes it (not fastavro's code)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_apache_avro_computes_our_header_fingerprint() -> None:
    """Apache `avro` (Python) keeps `{"type":"string"}` for a logical-typed primitive in the
    canonical form, where Java, Rust and fastavro write `"string"` (the spec is ambiguous,
    apache/avro-rs#61). Without logicalType annotations every implementation agrees, and
    the annotations are not part of the wire format, so that is the form to compare."""
    raw = json.loads((codec.SCHEMA_DIR / codec.CURRENT_SCHEMA_FILE).read_text())
    stripped = avro.schema.parse(json.dumps(writer_schemas._strip_logical_types(raw)))
    canonical = stripped.canonical_form
    fingerprint = crc64_avro(canonical.encode()).to_bytes(8, "little")
    assert stripped.fingerprint("CRC-64-AVRO") == fingerprint
    assert codec.encode(SAMPLES[0])[2:10] == fingerprint
    annotated = avro.schema.parse(json.dumps(raw)).canonical_form
    simplified = annotated.replace('{"type":"string"}', '"string"')
    assert simplified.replace('{"type":"long"}', '"long"') == canonical


def test_apache_avro_decodes_our_bodies_with_the_schema_file() -> None:
    schema = avro.schema.parse((codec.SCHEMA_DIR / codec.CURRENT_SCHEMA_FILE).read_text())
    reader = avro.io.DatumReader(schema)
    for event in SAMPLES:
        body = codec.encode(event)[codec.HEADER_SIZE :]
        decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(body)))
        ours = codec.decode_record(codec.encode(event))
        assert str(decoded["event_id"]) == ours["event_id"]
        assert decoded["run_id"] == ours["run_id"]
        assert decoded["sequence"] == ours["sequence"]
        assert decoded["timestamp"] == event.timestamp
        assert decoded["payload"] == _without_union_names(ours["payload"])


def _without_union_names(value: Any) -> Any:
    """Apache `avro` returns a union's record without its name: drop ours to compare."""
    if isinstance(value, tuple):
        return _without_union_names(value[1])
    if isinstance(value, dict):
        return {key: _without_union_names(item) for key, item in value.items()}
    return value


# --- the schema compiler, on every type it supports ---------------------------------------------

ALL_TYPES = fastavro.parse_schema(
    {
        "type": "record",
        "name": "All",
        "namespace": "test",
        "fields": [
            {"name": "n", "type": "null"},
            {"name": "b", "type": "boolean"},
            {"name": "i", "type": "int"},
            {"name": "l", "type": "long"},
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "y", "type": "bytes"},
            {"name": "s", "type": "string"},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
            {
                "name": "r",
                "type": {"type": "record", "name": "R", "fields": [{"name": "x", "type": "long"}]},
            },
            {"name": "again", "type": "R"},
            {"name": "opt", "type": ["null", "string"]},
            {
                "name": "either",
                "type": [
                    {"type": "enum", "name": "E2", "symbols": ["X", "Y"]},
                    {"type": "record", "name": "R2", "fields": [{"name": "z", "type": "string"}]},
                    "null",
                ],
            },
        ],
    }
)
READ_ALL = avro_reader.compile_reader(ALL_TYPES)
ALL_DEFAULTS: dict[str, Any] = {
    "n": None, "b": True, "i": 0, "l": 0, "f": 0.0, "d": 0.0, "y": b"", "s": "", "e": "A",
    "r": {"x": 0}, "again": {"x": 0}, "opt": None, "either": None,
}  # fmt: skip
WRITE_ALL = avro_writer.compile_writer(ALL_TYPES)
R = st.fixed_dictionaries({"x": st.integers(-(2**63), 2**63 - 1)})
ALL_VALUES = st.fixed_dictionaries(
    {
        "n": st.none(),
        "b": st.booleans(),
        "i": st.integers(-(2**31), 2**31 - 1),
        "l": st.integers(-(2**63), 2**63 - 1),
        "f": st.floats(width=32, allow_nan=False),
        "d": st.floats(allow_nan=False),
        "y": st.binary(max_size=200),
        "s": strategies.texts,
        "e": st.sampled_from("ABC"),
        "r": R,
        "again": R,
        "opt": st.none() | strategies.texts,
        "either": st.sampled_from("XY")
        | strategies.texts.map(lambda z: ("test.R2", {"z": z}))
        | st.none(),
    }
)


@settings(RELAXED, max_examples=150)
@given(ALL_VALUES)
def test_compiled_reader_and_writer_agree_with_fastavro_on_every_supported_type(
    value: dict[str, Any],
) -> None:
    expected = fastavro_write(value, ALL_TYPES)
    out = bytearray()
    WRITE_ALL(out, value)
    assert bytes(out) == expected
    assert READ_ALL(expected, 0) == (fastavro_read(expected, ALL_TYPES), len(expected))


def _boundaries() -> list[int]:
    """Longs at every varint length boundary (1 to 10 bytes), both signs, and around them."""
    values = set()
    for bits in range(0, 64, 7):
        for edge in (1 << bits, (1 << bits) - 1, (1 << bits) + 1):
            values |= {edge >> 1, -(edge >> 1), -(edge >> 1) - 1}
    values |= {2**63 - 1, -(2**63), 1_795_183_387_135_456, -62_135_596_800_000_000}
    return sorted(value for value in values if -(2**63) <= value < 2**63)


def test_compiled_codec_agrees_with_fastavro_at_every_varint_length() -> None:
    """The inline one-, two- and eight-byte paths and the general loop, on both sides."""
    for value in _boundaries():
        text = "x" * (abs(value) % 200)  # string lengths around the one-byte limit, too
        record = {**ALL_DEFAULTS, "l": value, "s": text, "r": {"x": value}}
        expected = fastavro_write(record, ALL_TYPES)
        out = bytearray()
        WRITE_ALL(out, record)
        assert bytes(out) == expected, value
        assert READ_ALL(expected, 0) == (fastavro_read(expected, ALL_TYPES), len(expected))


def test_strings_of_63_and_64_bytes_round_trip() -> None:
    for size in (62, 63, 64, 65, 127, 128, 8191, 8192):
        record = {**ALL_DEFAULTS, "s": "é" * (size // 2) + "x" * (size % 2)}
        expected = fastavro_write(record, ALL_TYPES)
        out = bytearray()
        WRITE_ALL(out, record)
        assert bytes(out) == expected
        assert READ_ALL(expected, 0)[0] == record


def test_a_union_index_written_in_two_bytes_is_still_read() -> None:
    """No encoder writes 3 as `86 00`, but it is valid Avro, and the fast path reads only
    one-byte indexes itself."""
    canonical = envelope(3, b"\x02a")
    padded = canonical[:-3] + b"\x86\x00" + canonical[-2:]
    assert codec.decode_record(padded) == codec.decode_record(canonical)


def test_compiled_writer_checks_integer_ranges() -> None:
    base = ALL_DEFAULTS
    for field, value in (("l", 2**63), ("l", -(2**63) - 1), ("i", 2**31), ("i", -(2**31) - 1)):
        with pytest.raises(CodecError, match=f"All.{field} = {value} does not fit"):
            WRITE_ALL(bytearray(), {**base, field: value})


def test_unsupported_avro_types_fail_at_compile_time() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "A",
            "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}],
        }
    )
    with pytest.raises(NotImplementedError, match="array"):
        avro_reader.compile_reader(schema)


# --- bad input: always CodecError, never another exception, never a hang -------------------------


def test_every_truncation_of_every_sample_is_a_codec_error() -> None:
    for event in SAMPLES:
        encoded = codec.encode(event)
        for cut in range(len(encoded)):
            with pytest.raises(CodecError):
                codec.decode_record(encoded[:cut])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than the 10-byte header"),
        (b"\xc3\x02" + bytes(8) + b"\x00", "not an Avro single-object"),
        (b"\x00" + codec.encode(SAMPLES[0])[1:], "not an Avro single-object"),
        (b'{"event_id": "3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00"}', "not an Avro single-object"),
    ],
    ids=["empty", "second-byte", "first-byte", "json"],
)
def test_wrong_marker_is_a_codec_error(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode_record(data)


def test_unknown_fingerprint_is_an_unknown_schema_error() -> None:
    data = codec.MAGIC + bytes.fromhex("0011223344556677") + codec.encode(SAMPLES[0])[10:]
    with pytest.raises(UnknownSchemaError, match="0011223344556677"):
        codec.decode(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (envelope(17, b""), r"payload has index 17, but the schema has only 17"),
        (HEADER + b"\x00\x00\x00\x00\x01", r"payload has index -1"),
        (envelope(8, b"\x02a\x02a\x04" + b"\x00"), r"result has index 2"),
        (envelope(12, b"\x0a\x00"), r"finish_reason has index 5"),
    ],
    ids=["payload", "negative", "nested-union", "enum"],
)
def test_union_or_enum_index_out_of_range_is_a_codec_error(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode_record(data)


def test_invalid_utf8_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="not valid UTF-8"):
        codec.decode_record(envelope(3, b"\x04\xff\xfe"))


def test_trailing_garbage_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="1 bytes left over"):
        codec.decode_record(codec.encode(SAMPLES[3]) + b"\x00")


def test_huge_declared_length_fails_fast_without_allocating() -> None:
    huge = HEADER + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + bytes(40)  # 2**62 - 1 bytes
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="declares 4611686018427387903 bytes"):
            codec.decode_record(huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (HEADER + b"\xff" * 20, "longer than 10 bytes"),
        (HEADER + b"\xff" * 9 + b"\x02", "exceeds 64 bits"),
        (HEADER + b"\x01" + bytes(40), "declares -1 bytes"),
        (HEADER + b"\x48" + b"\x00" * 4, "truncated"),
    ],
    ids=["overlong-varint", "varint-over-64-bits", "negative-length", "short-string"],
)
def test_malformed_integers_and_lengths_are_codec_errors(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode_record(data)


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("metadata", {"session_id": str(RUN), "provider": "p", "model": "m", "metadata": "{"}),
        ("ToolCall.arguments", {"call": {"id": "c", "name": "n", "arguments": "nope"}}),
    ],
)
def test_json_field_that_is_not_json_fails_in_to_event(field: str, fields: dict[str, Any]) -> None:
    name = "behest.RunStarted" if "metadata" in fields else "behest.ToolCallCompleted"
    data = codec.encode_record(
        {
            "event_id": str(RUN),
            "run_id": str(RUN),
            "sequence": 0,
            "timestamp": 0,
            "payload": (name, fields),
        }
    )
    assert codec.decode_record(data)["payload"] == (name, fields)
    with pytest.raises(CodecError, match=f"{field} is not valid JSON"):
        codec.decode(data)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"sequence": -1}, "sequence"),
        ({"timestamp": 2**62}, "outside the years 1 to 9999"),
        ({"payload": ("behest.Nope", {})}, "unknown event variant 'behest.Nope'"),
        ({"payload": ("behest.UsageRecorded", {"usage": {"input_tokens": -1}})}, "usage"),
    ],
)
def test_records_the_model_rejects_are_codec_errors_in_to_event(
    record: dict[str, Any], message: str
) -> None:
    base = codec.decode_record(codec.encode(SAMPLES[12]))
    with pytest.raises(CodecError, match=message):
        codec.to_event({**base, **record})  # type: ignore[typeddict-item]


@pytest.mark.parametrize("value", [None, "C3 01", 42])
def test_values_that_are_not_bytes_are_codec_errors(value: Any) -> None:
    with pytest.raises(CodecError, match="tombstone" if value is None else "is bytes, not"):
        codec.decode(value)


@settings(RELAXED, max_examples=300)
@given(
    header=st.sampled_from(sorted(codec.VERSIONS)),
    body=st.binary(max_size=200),
)
def test_random_bytes_after_a_valid_header_raise_nothing_but_codec_error(
    header: bytes, body: bytes
) -> None:
    with contextlib.suppress(CodecError):
        codec.decode(codec.MAGIC + header + body)


@settings(RELAXED, max_examples=300)
@given(
    event=st.sampled_from(SAMPLES),
    position=st.integers(min_value=codec.HEADER_SIZE, max_value=10_000),
    byte=st.integers(0, 255),
)
def test_corrupting_one_byte_of_an_event_raises_nothing_but_codec_error(
    event: AgentEvent, position: int, byte: int
) -> None:
    data = bytearray(codec.encode(event))
    data[position % len(data)] = byte
    with contextlib.suppress(CodecError):
        codec.decode(bytes(data))


# --- events that cannot be encoded ----------------------------------------------------------------


def _constructed(**changes: Any) -> AgentEvent:
    fields: dict[str, Any] = {
        "event_id": uuid.UUID(int=1),
        "run_id": RUN,
        "sequence": 0,
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "payload": TextDelta(delta="x"),
    }
    return AgentEvent.model_construct(**(fields | changes))


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (_constructed(payload=TextDelta.model_construct(delta=5)), "AttributeError"),
        (_constructed(sequence="7"), "TypeError"),
        (_constructed(sequence=2**63), "does not fit an Avro 64-bit integer"),
        (_constructed(event_id=str(RUN)), "expected a UUID, not str"),
        (_constructed(timestamp=datetime(2026, 1, 1)), "TypeError"),  # noqa: DTZ001
        (_constructed(payload=TextDelta(delta="\ud800")), "surrogates not allowed"),
        (_constructed(payload=TokenUsage()), "payload must be one of RunStarted, "),
        (
            _constructed(payload=UsageRecorded.model_construct(usage={"input_tokens": 1})),
            "AttributeError: .dict. object has no attribute .input_tokens.",
        ),
        (
            _constructed(
                payload=RunStarted.model_construct(
                    session_id=RUN, provider="p", model="m", metadata={1, 2}
                )
            ),
            "not JSON serializable: set",
        ),
        (
            _constructed(
                payload=ToolCallCompleted(call=ToolCall(id="c", name="n", arguments=2**64))
            ),
            "Integer exceeds 64-bit range",
        ),
        (
            _constructed(
                payload=ToolExecutionFinished.model_construct(
                    call_id="c", tool_name="t", result="ok", duration_ms=1
                )
            ),
            "result must be one of ToolExecutionSuccess, ToolExecutionFailure, not str",
        ),
        (
            _constructed(payload=RunCompleted.model_construct(finish_reason="done", iterations=1)),
            "one of stop",
        ),
    ],
    ids=[
        "int-text",
        "text-sequence",
        "huge-sequence",
        "text-uuid",
        "naive-time",
        "surrogate",
        "not-a-variant",
        "dict-usage",
        "set-metadata",
        "huge-json-int",
        "text-result",
        "unknown-reason",
    ],
)
def test_invalid_events_raise_codec_error_on_encode(event: AgentEvent, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.encode(event)


def test_success_result_round_trips_null_output() -> None:
    event = _constructed(
        payload=ToolExecutionFinished(
            call_id="c", tool_name="t", result=ToolExecutionSuccess(), duration_ms=0
        )
    )
    assert codec.decode(codec.encode(event)) == event


# --- Confluent Schema Registry framing (confluent-kafka's in-memory client, no server) ---------


@pytest.fixture
def registry_codec() -> Any:
    schema_registry = pytest.importorskip("confluent_kafka.schema_registry")
    from behest.registry import RegistryCodec

    client = schema_registry.SchemaRegistryClient.new_client({"url": "mock://behest-tests"})
    return RegistryCodec(client, topic="events")


def test_registry_framing_round_trips_every_sample(registry_codec: Any) -> None:
    for event in SAMPLES:
        framed = registry_codec.encode(event)
        assert framed[:1] == b"\x00"
        assert int.from_bytes(framed[1:5], "big") == registry_codec.schema_id
        assert framed[5:] == codec.encode_body(event)
        assert registry_codec.decode(framed) == event


def test_registry_codec_registers_under_the_topic_value_subject(registry_codec: Any) -> None:
    schema_id = registry_codec.schema_id
    latest = registry_codec._client.get_latest_version("events-value")
    assert latest.schema_id == schema_id
    assert codec.schema_fingerprint(latest.schema.schema_str) == codec.CURRENT.fingerprint


def test_registry_decodes_ids_of_older_versions_it_did_not_register(registry_codec: Any) -> None:
    from confluent_kafka.schema_registry import Schema

    v1 = next(v for v in codec.VERSIONS.values() if v.name == "agent_event.v1.avsc")
    v1_id = registry_codec._client.register_schema(
        "other-value", Schema(json.dumps(v1.raw), "AVRO")
    )
    record = codec.decode_record(codec.encode(SAMPLES[0]))
    body = fastavro_write(record, v1.parsed)
    event = registry_codec.decode(b"\x00" + v1_id.to_bytes(4, "big") + body)
    assert event.payload.metadata is None
    assert event.payload.session_id == SAMPLES[0].payload.session_id


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"\x00\x00\x00", CodecError, "not a Schema Registry framed event"),
        (b"\xc3\x01\x00\x00\x00\x01", CodecError, "not a Schema Registry framed event"),
        (b"\x00\x00\x00\x03\xe7\x00", UnknownSchemaError, "schema id 999"),
    ],
    ids=["short", "single-object", "unknown-id"],
)
def test_registry_framing_rejects_bad_input(
    registry_codec: Any, data: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        registry_codec.decode(data)


def test_registry_rejects_schemas_that_are_not_ours(registry_codec: Any) -> None:
    from confluent_kafka.schema_registry import Schema

    other = Schema(json.dumps({"type": "record", "name": "X", "fields": []}), "AVRO")
    schema_id = registry_codec._client.register_schema("x-value", other)
    with pytest.raises(UnknownSchemaError, match="not a behest event schema"):
        registry_codec.decode(b"\x00" + schema_id.to_bytes(4, "big"))
