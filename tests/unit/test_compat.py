"""The static writer → reader check (`behest.compat`) and the codec's run-time registry.

The verdicts are compared with the Apache `avro` package's ReaderWriterCompatibilityChecker
(the Java library's rules, ported) on schema changes a producer might make."""

from __future__ import annotations

import copy
import io
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from hypothesis import given, settings
from hypothesis import strategies as st

from behest import codec
from behest.compat import incompatibilities
from behest.errors import CodecError, IncompatibleSchemaError, UnknownSchemaError
from tests.schema_registry import restored_schema_registry

Change = Callable[[dict[str, Any]], None]


def _payload(schema: dict[str, Any], name: str) -> dict[str, Any]:
    union = next(f for f in schema["fields"] if f["name"] == "payload")["type"]
    return next(b for b in union if isinstance(b, dict) and b["name"] == name)


def _add_envelope_field(default: bool) -> Change:
    def change(schema: dict[str, Any]) -> None:
        field: dict[str, Any] = {"name": "tenant" if default else "region", "type": "string"}
        if default:
            field["default"] = ""
        schema["fields"].append(field)

    return change


def _retype(field: str, new_type: Any) -> Change:
    def change(schema: dict[str, Any]) -> None:
        next(f for f in schema["fields"] if f["name"] == field)["type"] = new_type

    return change


def _drop_metadata(schema: dict[str, Any]) -> None:
    run_started = _payload(schema, "RunStarted")
    run_started["fields"] = [f for f in run_started["fields"] if f["name"] != "metadata"]


def _new_variant(schema: dict[str, Any]) -> None:
    union = next(f for f in schema["fields"] if f["name"] == "payload")["type"]
    union.append({"type": "record", "name": "Thinking", "fields": []})


def _new_enum_symbol(schema: dict[str, Any]) -> None:
    completed = _payload(schema, "RunCompleted")
    reason = next(f for f in completed["fields"] if f["name"] == "finish_reason")["type"]
    enum = next(b for b in reason if isinstance(b, dict) and b.get("type") == "enum")
    enum["symbols"] = [*enum["symbols"], "paused"]


def _rename_record(schema: dict[str, Any]) -> None:
    schema["name"] = "AgentEventV3"


CHANGES: dict[str, Change] = {
    "a field with a default": _add_envelope_field(default=True),
    "a field without a default": _add_envelope_field(default=False),
    "sequence long → string": _retype("sequence", "string"),
    "sequence long → int (promoted)": _retype("sequence", "int"),
    "sequence long → double": _retype("sequence", "double"),
    "RunStarted.metadata dropped (the reader's has a default)": _drop_metadata,
    "a new payload variant": _new_variant,
    "a new finish reason symbol": _new_enum_symbol,
    "the record renamed": _rename_record,
}


def _changed(change: Change) -> dict[str, Any]:
    schema = copy.deepcopy(codec.CURRENT.raw)
    change(schema)
    return schema


def _apache_verdict(writer: dict[str, Any], reader: dict[str, Any]) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    return result.compatibility is SchemaCompatibilityType.compatible


@pytest.mark.parametrize("name", list(CHANGES))
def test_verdicts_agree_with_apache_avro(name: str) -> None:
    writer = _changed(CHANGES[name])
    problems = incompatibilities(fastavro.parse_schema(writer), codec.CURRENT.parsed)
    assert (not problems) == _apache_verdict(writer, codec.CURRENT.raw), problems


def test_every_shipped_version_reads_every_other() -> None:
    versions = list({v.fingerprint: v for v in codec.VERSIONS.values()}.values())
    for writer in versions:
        for reader in versions:
            assert incompatibilities(writer.parsed, reader.parsed) == []


def test_reasons_name_the_field() -> None:
    writer = fastavro.parse_schema(_changed(_add_envelope_field(default=False)))
    reader = fastavro.parse_schema(_changed(_add_envelope_field(default=False)))
    assert incompatibilities(codec.CURRENT.parsed, reader) == [
        "AgentEvent.region: the reader's field is not written and has no default"
    ]
    assert incompatibilities(writer, codec.CURRENT.parsed) == []
    variant = fastavro.parse_schema(_changed(_new_variant))
    assert incompatibilities(variant, codec.CURRENT.parsed) == [
        "AgentEvent.payload: the writer's record Thinking branch has no match in the reader's union"
    ]


@pytest.fixture
def registry() -> Iterator[None]:
    with restored_schema_registry():
        yield


def _written(schema: dict[str, Any], **extra: Any) -> bytes:
    body = io.BytesIO()
    record = {
        "event_id": str(uuid.uuid4()),
        "run_id": str(uuid.uuid4()),
        "sequence": 3,
        "timestamp": 1_700_000_000_000_000,
        "payload": ("behest.RunCancelled", {}),
        **extra,
    }
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return codec.MAGIC + codec.schema_fingerprint(schema) + body.getvalue()


@pytest.mark.usefixtures("registry")
def test_a_published_schema_decodes_and_a_refused_one_says_why() -> None:
    newer = _changed(_add_envelope_field(default=True))
    data = _written(newer, tenant="acme")
    with pytest.raises(UnknownSchemaError, match="behest dlq replay"):
        codec.decode(data)
    version = codec.add_writer_schema(json.dumps(newer), "test")
    assert version.published
    assert codec.decode(data).sequence == 3
    assert codec.header_fingerprint(data) == version.fingerprint
    assert version.record() == (version.fingerprint.hex().encode(), version.record()[1])

    bad = _changed(_retype("sequence", "string"))
    with pytest.raises(IncompatibleSchemaError, match=r"AgentEvent\.sequence: a string"):
        codec.add_writer_schema(bad)
    with pytest.raises(IncompatibleSchemaError, match="incompatible"):
        codec.decode(_written(bad, sequence="three"))


@pytest.mark.usefixtures("registry")
def test_a_schema_source_is_asked_for_an_unknown_fingerprint() -> None:
    newer = _changed(_add_envelope_field(default=True))
    data = _written(newer, tenant="acme")

    class Store:
        def get_schema(self, fingerprint: bytes) -> bytes | None:
            return json.dumps(newer).encode() if fingerprint == data[2:10] else None

    store = Store()
    codec.add_schema_source(store)
    assert codec.decode(data).sequence == 3


def test_not_a_schema_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="not an Avro schema"):
        codec.add_writer_schema("{bad")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(sorted(CHANGES)), min_size=1, max_size=3, unique=True))
def test_any_mix_of_changes_agrees_with_apache_avro_both_ways(names: list[str]) -> None:
    """Several changes at once, read in either direction: the same verdict as Apache's."""
    changed = copy.deepcopy(codec.CURRENT.raw)
    for name in names:
        CHANGES[name](changed)
    current = codec.CURRENT.raw
    for writer, reader in ((changed, current), (current, changed)):
        problems = incompatibilities(fastavro.parse_schema(writer), fastavro.parse_schema(reader))
        assert (not problems) == _apache_verdict(writer, reader), (names, problems)
