"""The compiled (C) codec against the generated Python one: the same objects (types, key
order), the same bytes, the same errors, on generated values, on every event variant, and
on corrupt input (random bytes, every truncation, every one-byte change), where it must
raise, never crash."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behest import avro_program, avro_reader, avro_writer, codec
from behest.errors import CodecError
from behest.events import (
    AgentEvent,
    RunCompleted,
    RunStarted,
    TextDelta,
    TokenUsage,
    ToolExecutionFinished,
    UsageRecorded,
)
from behest.record_checks import FIELD_CHECKS, check_record, json_fits
from behest.times import EPOCH, MICROSECOND
from tests.unit import strategies
from tests.unit.test_codec import ALL_DEFAULTS, ALL_TYPES, ALL_VALUES, _constructed

# The build is optional (a failed compile never fails the install): where a compiler is,
# this module fails rather than skips when the extension is missing, so that the compiled
# codec cannot be lost silently.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = codec.MAGIC + codec.CURRENT.fingerprint
SAMPLES = [codec.encode(event) for event in strategies.sample_events()]

COMPILER = shutil.which("cc") or shutil.which("gcc")
if os.environ.get(avro_program.PURE_PYTHON_ENV, "") not in ("", "0") or (
    avro_program.Program is None and not COMPILER
):
    pytest.skip(f"no compiled codec: {avro_program.unavailable_reason()}", allow_module_level=True)
assert avro_program.Program is not None, (
    f"a C compiler is here, but {avro_program.unavailable_reason()}: run `make venv` "
    "(or `pip install -e .`), which builds it"
)

PROGRAM = avro_program.load(codec.CURRENT.parsed, FIELD_CHECKS, json_fits, check_record)
PY_READ = avro_reader.compile_decoder(codec.CURRENT.parsed)
PY_WRITE = avro_writer.compile_writer(codec.CURRENT.parsed)
ALL_PROGRAM = avro_program.load(ALL_TYPES)
ALL_READ = avro_reader.compile_reader(ALL_TYPES)
ALL_WRITE = avro_writer.compile_writer(ALL_TYPES)
assert PROGRAM is not None and ALL_PROGRAM is not None, avro_program.unavailable_reason()


def shape(value: Any) -> Any:
    """`value` with every type and every dict's key order made visible, for `==`."""
    if isinstance(value, dict):
        return ("dict", [(key, shape(item)) for key, item in value.items()])
    if isinstance(value, tuple | list):
        return (type(value).__name__, [shape(item) for item in value])
    return (type(value).__name__, value)


def outcome(action: Any, *args: Any) -> Any:
    """What an action did: its value's shape, or its error. Truncation is an IndexError
    on both sides (its text differs; the callers name the length) and bad UTF-8 a
    UnicodeDecodeError (the callers keep only its reason)."""
    try:
        return ("value", shape(action(*args)))
    except IndexError:
        return ("truncated",)
    except UnicodeDecodeError as error:
        return ("utf-8", error.reason)
    except (
        CodecError,
        TypeError,
        ValueError,
        KeyError,
        AttributeError,
        OverflowError,
        struct.error,
    ) as error:
        return (type(error).__name__, str(error))


def write_outcome(write: Any, value: Any) -> Any:
    out = bytearray()
    result = outcome(write, out, value)
    return result if result[0] != "value" else ("bytes", bytes(out))


def py_read_checked(data: bytes, pos: int) -> Any:
    record = PY_READ(data, pos)
    check_record(record)
    return record


# --- the same objects and bytes -------------------------------------------------------------------


@settings(RELAXED, max_examples=200)
@given(ALL_VALUES)
def test_every_supported_type_reads_and_writes_as_the_generated_python(
    value: dict[str, Any],
) -> None:
    expected = write_outcome(ALL_WRITE, value)
    assert write_outcome(ALL_PROGRAM.write, value) == expected
    data = expected[1]
    assert outcome(ALL_PROGRAM.read, data, 0) == outcome(ALL_READ, data, 0)
    assert ALL_PROGRAM.encode(b"\x01", value) == b"\x01" + data


@settings(RELAXED, max_examples=300)
@given(strategies.events())
def test_every_event_decodes_and_encodes_as_the_generated_python(event: AgentEvent) -> None:
    data = codec.encode(event)
    record = PY_READ(data, codec.HEADER_SIZE)
    assert shape(PROGRAM.decode(data, codec.HEADER_SIZE)) == shape(record)
    assert shape(PROGRAM.decode_checked(data, codec.HEADER_SIZE)) == shape(record)
    assert PROGRAM.encode(HEADER, record) == data
    assert fastavro.schemaless_writer is not None  # fastavro agreement: test_codec, both paths


def encode_outcome(compiled: bool, event: AgentEvent) -> Any:
    codec.use_compiled(compiled)
    try:
        return ("bytes", codec.encode(event), codec.encode_body(event))
    except CodecError as error:
        return ("CodecError", str(error))
    finally:
        codec.use_compiled(True)


@settings(RELAXED, max_examples=300)
@given(strategies.events())
def test_events_encode_straight_from_the_models_as_the_generated_python(
    event: AgentEvent,
) -> None:
    assert encode_outcome(True, event) == encode_outcome(False, event)
    run_text = str(event.run_id)
    assert codec.encode_stamped(event, run_text)[0] == codec.encode(event)


@pytest.mark.parametrize(
    "changes",
    [
        {"payload": TextDelta.model_construct(delta=5)},
        {"payload": TextDelta.model_construct()},
        {"sequence": "7"},
        {"sequence": 2**63},
        {"event_id": "3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00"},
        {"payload": TextDelta(delta="\ud800")},
        {"payload": TokenUsage()},
        {"payload": None},
        {"payload": UsageRecorded.model_construct(usage={"input_tokens": 1})},
        {"payload": RunStarted.model_construct(session_id=1, provider="p", model="m")},
        {"payload": RunStarted.model_construct(metadata={1}, provider="p", model="m")},
        {"payload": ToolExecutionFinished.model_construct(call_id="c", result="ok")},
        {"payload": RunCompleted.model_construct(finish_reason="done", iterations=1)},
        {"payload": RunCompleted.model_construct(finish_reason=None, iterations=1)},
    ],
)
def test_events_that_cannot_be_encoded_fail_alike(changes: dict[str, Any]) -> None:
    event = _constructed(**changes)
    assert encode_outcome(True, event) == encode_outcome(False, event)
    assert encode_outcome(True, event)[0] == "CodecError"


@pytest.mark.parametrize("number", [0, 1, 2**64 - 1, 2**64, 2**127, 2**128 - 1])
def test_uuids_are_written_as_pydantic_writes_them(number: int) -> None:
    """C formats a uuid.UUID's text itself; pydantic's serializer is the reference."""
    event = _constructed(event_id=uuid.UUID(int=number))
    assert encode_outcome(True, event) == encode_outcome(False, event)
    assert str(uuid.UUID(int=number)).encode() in codec.encode(event)


class Shifted(tzinfo):
    """A tzinfo of a fixed offset that is not datetime.timezone (its utcoffset is called)."""

    def __init__(self, offset: timedelta | None) -> None:
        self.offset = offset

    def utcoffset(self, moment: datetime | None) -> timedelta | None:
        return self.offset


def _daylight_saving() -> list[tzinfo]:
    """A zone whose offset depends on the time and `fold`, where the machine has tzdata."""
    try:
        return [ZoneInfo("America/New_York")]
    except ZoneInfoNotFoundError:
        return []


ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(-timedelta(hours=23, minutes=59)),
        *_daylight_saving(),
        Shifted(timedelta(minutes=-90)),
        Shifted(timedelta(microseconds=7)),
    ]
)


def micros_outcome(compute: Any, moment: Any, epoch: Any = EPOCH, unit: Any = MICROSECOND) -> Any:
    try:
        return ("value", compute(moment, epoch, unit))
    except (TypeError, ValueError, OverflowError) as error:
        return (type(error).__name__, str(error))


def python_micros(moment: Any, epoch: Any, unit: Any) -> Any:
    return (moment - epoch) // unit


@settings(RELAXED, max_examples=500)
@given(moment=st.datetimes(timezones=ZONES), fold=st.integers(0, 1))
def test_micros_of_aware_times_are_pythons(moment: datetime, fold: int) -> None:
    moment = moment.replace(fold=fold)
    assert micros_outcome(avro_program.micros, moment) == micros_outcome(python_micros, moment)


@pytest.mark.parametrize(
    ("moment", "epoch", "unit"),
    [
        (datetime(2026, 1, 1), EPOCH, MICROSECOND),  # noqa: DTZ001 -- naive: TypeError
        (datetime(2026, 1, 1, tzinfo=Shifted(None)), EPOCH, MICROSECOND),
        (datetime(2026, 1, 1, tzinfo=Shifted(timedelta(hours=24))), EPOCH, MICROSECOND),
        (datetime(2026, 1, 1, tzinfo=UTC), EPOCH, timedelta(milliseconds=1)),
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2000, 1, 1, tzinfo=UTC), MICROSECOND),
        (datetime.min.replace(tzinfo=UTC), EPOCH, MICROSECOND),
        (datetime.max.replace(tzinfo=UTC), EPOCH, MICROSECOND),
        ("2026-01-01", EPOCH, MICROSECOND),
    ],
)
def test_micros_of_anything_else_are_pythons(moment: Any, epoch: Any, unit: Any) -> None:
    expected = micros_outcome(python_micros, moment, epoch, unit)
    assert micros_outcome(avro_program.micros, moment, epoch, unit) == expected


def test_values_of_the_wrong_type_fail_alike() -> None:
    wrong = [
        *(None, "x", 1.5, b"x", True, 2**70, -(2**40), [1], {"x": 1}, {}, "\ud800", object()),
        *(("test.R2", {"z": "a"}), ("nope", {}), (1, 2, 3), ("test.R2",)),
    ]
    for field in ALL_DEFAULTS:
        for value in wrong:
            record = {**ALL_DEFAULTS, field: value}
            assert write_outcome(ALL_PROGRAM.write, record) == write_outcome(ALL_WRITE, record), (
                field,
                value,
            )
    for record in ({}, [], None, {k: v for k, v in ALL_DEFAULTS.items() if k != "d"}):
        assert write_outcome(ALL_PROGRAM.write, record) == write_outcome(ALL_WRITE, record)


def test_write_appends_to_what_the_buffer_holds() -> None:
    out = bytearray(b"head")
    ALL_PROGRAM.write(out, ALL_DEFAULTS)
    expected = bytearray(b"head")
    ALL_WRITE(expected, ALL_DEFAULTS)
    assert out == expected


# --- corrupt input: the same error, never a crash -------------------------------------------------


def assert_alike(data: bytes) -> None:
    at = codec.HEADER_SIZE
    assert outcome(PROGRAM.decode, data, at) == outcome(PY_READ, data, at), data.hex()
    assert outcome(PROGRAM.decode_checked, data, at) == outcome(py_read_checked, data, at)


def test_every_truncation_of_every_sample_fails_alike() -> None:
    for data in SAMPLES:
        for cut in range(codec.HEADER_SIZE, len(data) + 1):
            assert_alike(data[:cut])


def test_every_one_bit_flip_of_every_sample_fails_alike() -> None:
    for data in SAMPLES:
        for position in range(codec.HEADER_SIZE, len(data)):
            for bit in range(8):
                corrupt = bytearray(data)
                corrupt[position] ^= 1 << bit
                assert_alike(bytes(corrupt))


@settings(RELAXED, max_examples=500)
@given(body=st.binary(max_size=300))
def test_random_bodies_fail_alike(body: bytes) -> None:
    assert_alike(HEADER + body)


@settings(RELAXED, max_examples=300)
@given(
    data=st.sampled_from(SAMPLES),
    position=st.integers(min_value=codec.HEADER_SIZE, max_value=10_000),
    replacement=st.binary(min_size=1, max_size=12),
)
def test_spliced_bytes_fail_alike(data: bytes, position: int, replacement: bytes) -> None:
    at = codec.HEADER_SIZE + position % (len(data) - codec.HEADER_SIZE)
    assert_alike(data[:at] + replacement + data[at + len(replacement) // 2 :])


def codec_outcome(compiled: bool, action: Any, data: Any) -> Any:
    codec.use_compiled(compiled)
    try:
        return outcome(action, data)
    finally:
        codec.use_compiled(True)


def test_decode_record_and_decode_checked_fail_alike_on_both_paths() -> None:
    """The whole of `codec.decode_record` and `decode_checked` (header, framing, the
    errors' words), not only the programs: compiled, they are one C call."""
    older = codec.MAGIC + sorted(set(codec.VERSIONS) - {codec.CURRENT.fingerprint})[0]
    inputs: list[Any] = [None, "text", 42, b"", b"\xc3", HEADER, older + SAMPLES[3][10:]]
    for data in SAMPLES:
        inputs += [data, bytearray(data), memoryview(data), data[:-1], data + b"\x00"]
        inputs += [data[:cut] for cut in range(0, len(data), 7)]
        inputs += [data[:12] + b"\xff\xfe" + data[14:], b"\xc3\x02" + data[2:]]
    for data in inputs:
        for action in (codec.decode_record, codec.decode_checked):
            assert codec_outcome(True, action, data) == codec_outcome(False, action, data)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff" * 11,  # a varint longer than ten bytes
        b"\xff" * 9 + b"\x02",  # ten bytes, more than 64 bits
        b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # the longest length there is
        b"\x80",  # a varint cut short
        b"\x48",  # a string cut short
    ],
)
def test_malformed_varints_fail_alike(body: bytes) -> None:
    assert_alike(HEADER + body)
    assert_alike(SAMPLES[3][:-3] + body)


def test_reads_take_any_buffer_and_check_the_start() -> None:
    data = SAMPLES[5]
    expected = PROGRAM.decode(data, codec.HEADER_SIZE)
    assert PROGRAM.decode(bytearray(data), codec.HEADER_SIZE) == expected
    assert PROGRAM.decode(memoryview(data), codec.HEADER_SIZE) == expected
    for pos in (-1, len(data) + 1):
        with pytest.raises(IndexError):
            PROGRAM.decode(data, pos)
    with pytest.raises(TypeError):
        PROGRAM.decode("text", 0)


def test_unsupported_types_are_refused_when_the_program_is_built() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "A",
            "fields": [{"name": "a", "type": {"type": "map", "values": "long"}}],
        }
    )
    with pytest.raises(NotImplementedError, match="map"):
        avro_program.program_spec(schema, {})
    with pytest.raises(ValueError, match="malformed"):
        avro_program.Program((9, "x", 0, 0, 0, None, None, None, None), CodecError)


# --- which codec runs ---------------------------------------------------------------------------


def _implementation(environment: dict[str, str]) -> str:
    code = "from behest import codec; print(codec.implementation())"
    env = {**os.environ, **environment}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_environment_variable_forces_the_generated_python() -> None:
    assert _implementation({"BEHEST_PURE_PYTHON": "1"}).startswith("generated Python")
    assert _implementation({"BEHEST_PURE_PYTHON": "0"}).startswith("compiled")

    assert codec.implementation().startswith("compiled")
