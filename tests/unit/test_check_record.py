"""`check_record` admits only records `to_event` can build (at a tenth of its cost), and
`decode_checked` (fused in the compiled codec) refuses exactly what it refuses.

The projector stores only events that pass `check_record`, and readers build `AgentEvent`s
from stored events with `to_event`; so "no stored byte can fail a read" needs the two to
agree. Records are drawn from the Avro schema itself (every field, every union branch) with
hostile values where the schema allows them: negative longs, times outside the years
1..9999, text that is no UUID, JSON text that does not parse or nests too deep. A field
the model constrains but `check_record` forgets makes this test fail. The one difference
allowed: `check_record` refuses JSON nested deeper than `MAX_JSON_DEPTH`, which pydantic
would still take but a reader's JSON serializer might not.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from behest.codec import (
    CURRENT,
    MAX_JSON_DEPTH,
    check_record,
    decode_checked,
    decode_record,
    encode_record,
    to_event,
)
from behest.errors import CodecError
from tests.unit.strategies import json_values, texts

pytestmark = pytest.mark.usefixtures("codec_path")
"""Every test here runs under the compiled codec and the generated Python one."""

LONGS = st.one_of(
    st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), 2**63 - 1])
)
UUID_TEXTS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: f"{{{u}}}"),
    st.uuids().map(lambda u: f"urn:uuid:{u}"),
    texts,
)
JSON_TEXTS = st.one_of(
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.sampled_from(["{bad", "[1,", "", "nope", "NaN", "1e999", " 1 ", "null"]),
    st.integers(MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH + 2).map(lambda n: "[" * n + "]" * n),
    st.sampled_from([200, 300, 1000]).map(lambda n: '{"a":' * n + "1" + "}" * n),
    texts,
)
# The epoch's µs at the ends of the years 1 and 9999, and around them.
EDGES = [-62135596800000000, 253402300799999999]
TIMES = st.one_of(LONGS, st.sampled_from(EDGES), st.sampled_from([EDGES[0] - 1, EDGES[1] + 1]))


def _strategy(node: Any, names: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of an Avro type in the shape `decode_record` returns."""
    if isinstance(node, str):
        if node in names:
            return _strategy(names[node], names)
        return {"long": LONGS, "string": st.one_of(JSON_TEXTS, texts)}[node]
    if isinstance(node, list):
        return st.one_of([_branch(branch, names) for branch in node])
    kind = node["type"]
    if node.get("logicalType") == "uuid":
        return UUID_TEXTS
    if node.get("logicalType") == "timestamp-micros":
        return TIMES
    if kind == "record":
        names[node["name"]] = node
        return st.fixed_dictionaries(
            {f["name"]: _strategy(f["type"], names) for f in node["fields"]}
        )
    if kind == "enum":
        names[node["name"]] = node
        return st.sampled_from(node["symbols"])
    return _strategy(kind, names)


def _branch(node: Any, names: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A union branch: records come as `(full name, fields)`, other types as they are."""
    inner = _strategy(node, names)
    if isinstance(node, dict) and node["type"] == "record":
        name = f"behest.{node['name']}"
        return inner.map(lambda fields: (name, fields))
    return inner


RECORDS = _strategy(json.loads(json.dumps(CURRENT.raw)), {})


@settings(max_examples=1500, deadline=None)
@given(RECORDS)
def test_check_record_admits_exactly_what_to_event_builds(record: Any) -> None:
    try:
        data = encode_record(record)
    except CodecError:
        return  # not even the schema's
    record = decode_record(data)  # the very shape the projector sees
    try:
        to_event(record)
        built = True
    except CodecError:
        built = False
    try:
        check_record(record)
        refused = ""
    except CodecError as error:
        refused = str(error)
    try:
        decode_checked(data)  # the fused decode and check: the same verdict, the same words
        fused = ""
    except CodecError as error:
        fused = str(error)
    assert fused == refused, repr(record)
    if not built:
        assert refused, repr(record)
    elif refused:  # stricter on one count only: readers serialize deep JSON too
        assert "nests deeper" in refused, (refused, repr(record))


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
def test_json_nests_up_to_the_limit(levels: int) -> None:
    record: Any = {
        "event_id": "00000000-0000-4000-8000-000000000000",
        "run_id": "00000000-0000-4000-8000-000000000001",
        "sequence": 0,
        "timestamp": 0,
        "payload": (
            "behest.RunStarted",
            {
                "session_id": "00000000-0000-4000-8000-000000000002",
                "provider": "p",
                "model": "m",
                "metadata": "[" * levels + "]" * levels,
            },
        ),
    }
    if levels > MAX_JSON_DEPTH:
        with pytest.raises(CodecError, match="nests deeper"):
            check_record(record)
    else:
        check_record(record)
