"""Schema evolution: every version in `schemas/` stays readable, both ways, and an
incompatible edit of `agent_event.avsc` fails here before it reaches the log."""

from __future__ import annotations

import copy
import io
import itertools
import json
import re
from pathlib import Path
from typing import Any

import fastavro
import pytest

from behest import codec, writer_schemas
from behest.errors import CodecError
from behest.events import AgentEvent, RunStarted
from tests.unit import strategies

SAMPLES = strategies.sample_events()


def _version_number(path: Path) -> int:
    match = re.fullmatch(r"agent_event\.v(\d+)\.avsc", path.name)
    assert match, f"{path.name} does not follow agent_event.vN.avsc"
    return int(match[1])


VERSION_FILES = sorted(codec.SCHEMA_DIR.glob("agent_event.v*.avsc"), key=_version_number)
VERSIONS = {path.name: json.loads(path.read_text()) for path in VERSION_FILES}
CURRENT_RAW = json.loads((codec.SCHEMA_DIR / codec.CURRENT_SCHEMA_FILE).read_text())


def parse(raw: dict[str, Any]) -> dict[str, Any]:
    return fastavro.parse_schema(writer_schemas._strip_logical_types(raw))  # type: ignore[no-any-return]


# --- a compatibility checker, and proof that it catches incompatible edits ---------------------


def examples(node: Any, named: dict[str, Any]) -> list[Any]:
    """Values of a parsed schema that, together, take every union branch at least once."""
    if isinstance(node, str):
        if node in named:
            return examples(named[node], named)
        return [{"null": None, "boolean": True, "string": "x", "bytes": b"x"}.get(node, 1)]
    if isinstance(node, list):
        values: list[Any] = []
        for branch in node:
            definition = named.get(branch, branch) if isinstance(branch, str) else branch
            for value in examples(branch, named):
                is_record = isinstance(definition, dict) and definition["type"] == "record"
                values.append((definition["name"], value) if is_record else value)
        return values
    if node["type"] == "enum":
        return list(node["symbols"])
    if node["type"] == "record":
        per_field = [examples(field["type"], named) for field in node["fields"]]
        rows = max((len(values) for values in per_field), default=1)
        return [
            {
                f["name"]: values[i % len(values)]
                for f, values in zip(node["fields"], per_field, strict=True)
            }
            for i in range(rows)
        ]
    return examples(node["type"], named)


def choices(node: Any, path: str = "") -> dict[str, list[str]]:
    """Every union's branch names and every enum's symbols, by where they sit."""
    found: dict[str, list[str]] = {}
    if isinstance(node, list):
        found[path] = [b if isinstance(b, str) else b.get("name", b["type"]) for b in node]
        for branch in node:
            found |= choices(branch, path)
    elif isinstance(node, dict):
        if node.get("type") == "enum":
            found[f"{path}:{node['name']}"] = list(node["symbols"])
        for field in node.get("fields", []):
            found |= choices(field["type"], f"{path}/{node['name']}.{field['name']}")
        if isinstance(node.get("type"), dict | list):
            found |= choices(node["type"], path)
    return found


def _unreadable(values: list[Any], writer: dict[str, Any], reader: dict[str, Any]) -> str | None:
    for value in values:
        try:
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, writer, value)
            fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), writer, reader)
        except Exception as error:
            return f"{type(error).__name__}: {error}"
    return None


def incompatibilities(old_raw: dict[str, Any], new_raw: dict[str, Any]) -> list[str]:
    """Why `new` may not follow `old`. Every value the old schema can hold (each union
    branch exercised) must survive both ways through Avro schema resolution: written
    under old and read under new (old events replay), and written under new and read
    under old (old consumers keep working while producers upgrade). And unions and enums
    may only grow at their end, so a reader that does not resolve never picks the wrong
    branch. Values of new branches or symbols are not checked: old readers cannot know them."""
    old, new = parse(old_raw), parse(new_raw)
    values = examples(old, old["__named_schemas"])
    problems = []
    if why := _unreadable(values, old, new):
        problems.append(f"the new schema cannot read old data: {why}")
    if why := _unreadable(values, new, old):
        problems.append(f"old readers cannot read new data: {why}")
    new_choices = choices(new_raw)
    for where, names in choices(old_raw).items():
        if new_choices.get(where, [])[: len(names)] != names:
            problems.append(f"{where or 'top'}: {names} must stay a prefix of the new choices")
    return problems


def test_the_current_schema_is_compatible_with_every_version() -> None:
    for name, raw in VERSIONS.items():
        assert incompatibilities(raw, CURRENT_RAW) == [], name


@pytest.mark.parametrize(("older", "newer"), list(itertools.combinations(VERSIONS, 2)))
def test_each_version_is_compatible_with_every_older_one(older: str, newer: str) -> None:
    assert incompatibilities(VERSIONS[older], VERSIONS[newer]) == []


def _payload(raw: dict[str, Any], name: str) -> dict[str, Any]:
    union = next(f for f in raw["fields"] if f["name"] == "payload")["type"]
    return next(branch for branch in union if branch["name"] == name)  # type: ignore[no-any-return]


def _remove_field_without_default(raw: dict[str, Any]) -> None:
    _payload(raw, "RunStarted")["fields"].pop(1)  # provider


def _add_field_without_default(raw: dict[str, Any]) -> None:
    _payload(raw, "TextDelta")["fields"].append({"name": "priority", "type": "long"})


def _reorder_payload_union(raw: dict[str, Any]) -> None:
    union = raw["fields"][4]["type"]
    union[0], union[1] = union[1], union[0]


def _remove_last_variant(raw: dict[str, Any]) -> None:
    raw["fields"][4]["type"].pop()


def _change_field_type(raw: dict[str, Any]) -> None:
    _payload(raw, "TextDelta")["fields"][0]["type"] = "long"


def _reorder_enum_symbols(raw: dict[str, Any]) -> None:
    reason = _payload(raw, "RunCompleted")["fields"][0]["type"][0]
    reason["symbols"] = sorted(reason["symbols"])


@pytest.mark.parametrize(
    "edit",
    [
        _remove_field_without_default,
        _add_field_without_default,
        _reorder_payload_union,
        _remove_last_variant,
        _change_field_type,
        _reorder_enum_symbols,
    ],
)
def test_the_checker_catches_incompatible_edits(edit: Any) -> None:
    edited = copy.deepcopy(CURRENT_RAW)
    edit(edited)
    assert incompatibilities(CURRENT_RAW, edited)


def test_the_checker_accepts_compatible_edits() -> None:
    edited = copy.deepcopy(CURRENT_RAW)
    _payload(edited, "TextDelta")["fields"].append({"name": "index", "type": "long", "default": 0})
    _payload(edited, "RunCompleted")["fields"][0]["type"][0]["symbols"].append("refusal")
    edited["fields"][4]["type"].append({"type": "record", "name": "RunPaused", "fields": []})
    assert incompatibilities(CURRENT_RAW, edited) == []


# --- the versions on disk ------------------------------------------------------------------------


def test_every_version_is_on_disk_and_the_newest_is_the_current_schema() -> None:
    numbers = [_version_number(path) for path in VERSION_FILES]
    assert numbers == list(range(1, len(numbers) + 1))
    assert VERSIONS[VERSION_FILES[-1].name] == CURRENT_RAW, (
        "agent_event.avsc changed: copy it to a new agent_event.vN.avsc"
    )


def test_v1_has_the_seeds_fields_and_v2_adds_run_metadata() -> None:
    v1, v2 = (_payload(VERSIONS[f"agent_event.v{n}.avsc"], "RunStarted") for n in (1, 2))
    assert [f["name"] for f in v1["fields"]] == ["session_id", "provider", "model"]
    assert v2["fields"][:3] == v1["fields"]
    assert v2["fields"][3] | {"doc": ""} == {
        "name": "metadata",
        "type": "string",
        "default": "null",
        "doc": "",
    }


def test_every_version_and_the_current_schema_are_in_the_registry() -> None:
    assert codec.VERSIONS[codec.CURRENT.fingerprint] is codec.CURRENT
    for path in VERSION_FILES:
        assert codec.schema_fingerprint(path.read_text()) in codec.VERSIONS
    assert len(codec.VERSIONS) == len({json.dumps(parse(raw)) for raw in VERSIONS.values()})


# --- old events through the codec ----------------------------------------------------------------


def _written_under(version: str, event: AgentEvent) -> bytes:
    """`event` as a producer with that schema version wrote it."""
    schema = codec.VERSIONS[codec.schema_fingerprint(VERSIONS[version])]
    record = codec.decode_record(codec.encode(event))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    return codec.MAGIC + schema.fingerprint + buffer.getvalue()


@pytest.mark.parametrize("version", list(VERSIONS))
def test_events_of_every_version_decode_into_todays_model(version: str) -> None:
    for event in SAMPLES:
        decoded = codec.decode(_written_under(version, event))
        if version == "agent_event.v1.avsc" and isinstance(event.payload, RunStarted):
            assert decoded.payload.metadata is None  # type: ignore[union-attr]
            assert decoded == event.model_copy(
                update={"payload": event.payload.model_copy(update={"metadata": None})}
            )
        else:
            assert decoded == event


def test_v1_bytes_are_not_the_current_encoding() -> None:
    run_started = _written_under("agent_event.v1.avsc", SAMPLES[0])
    assert run_started[2:10] != codec.CURRENT.fingerprint
    assert len(run_started) < len(codec.encode(SAMPLES[0]))


def test_bad_v1_bytes_raise_codec_error() -> None:
    for event in SAMPLES[:4]:
        data = _written_under("agent_event.v1.avsc", event)
        for cut in range(codec.HEADER_SIZE, len(data)):
            with pytest.raises(CodecError):
                codec.decode_record(data[:cut])
        with pytest.raises(CodecError, match="left over"):
            codec.decode_record(data + b"\x00")
    header = _written_under("agent_event.v1.avsc", SAMPLES[0])[: codec.HEADER_SIZE]
    with pytest.raises(CodecError):
        codec.decode_record(header + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + bytes(40))
