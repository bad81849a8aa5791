"""The generic read path: any projection's states by key, many keys, point in time and
scans, answered by the same code for every projection; projections found by name."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from behest.codec import decode_record, encode
from behest.errors import ConfigError, InvalidQueryError
from behest.events import AgentEvent, EventRecord, TextDelta, Variant
from behest.fold.catalog import installed_projections, load_projection
from behest.fold.projection import fold
from behest.projections.tool_usage import ToolUsageProjection
from behest.read.projection_query import ProjectionQuery
from behest.read.reader import Absent, ProjectionReader
from behest.testing import ProjectionDriver, sample_run
from behest.times import format_micros, format_time, from_micros, parse_micros, to_micros

T0 = datetime(2026, 11, 20, 14, 3, 7, tzinfo=UTC)


class TextVolume:
    """Characters of streamed text per run, with an index of runs by first letter."""

    name = "text_volume"
    run_keyed = True

    def key(self, event: EventRecord) -> bytes:
        return uuid.UUID(event["run_id"]).bytes

    def apply(self, state: dict[str, object] | None, event: EventRecord) -> dict[str, object]:
        variant, body = event["payload"]
        count = int(state["chars"]) if state else 0  # type: ignore[call-overload]
        added = len(body["delta"]) if variant == Variant.TEXT_DELTA else 0
        return {"run": event["run_id"], "chars": count + added}

    def encode_state(self, state: dict[str, object]) -> bytes:
        return orjson.dumps(state)

    def decode_state(self, data: bytes) -> dict[str, object]:
        state: dict[str, object] = orjson.loads(data)
        return state

    def index_keys(self, state: dict[str, object]) -> Iterable[bytes]:
        return [b"r" + str(state["run"])[:1].encode() + uuid.UUID(str(state["run"])).bytes]


def _text_run(run_id: uuid.UUID, deltas: list[str]) -> list[AgentEvent]:
    return [
        AgentEvent(
            run_id=run_id,
            sequence=n,
            timestamp=T0 + timedelta(seconds=n),
            payload=TextDelta(delta=delta),
        )
        for n, delta in enumerate(deltas)
    ]


@pytest.fixture
def volumes(tmp_path: Path) -> Iterator[tuple[ProjectionQuery[dict[str, object]], list[uuid.UUID]]]:
    runs = [uuid.UUID(int=n << 64, version=4) for n in range(1, 6)]
    events = [e for r in runs for e in _text_run(r, ["ab", "cde", "f", "", "ghij"] * 3)]
    with ProjectionDriver(TextVolume(), tmp_path, snapshot_every=4) as driver:
        driver.feed(events)
        yield driver.query(), runs


def test_point_in_time_equals_the_fold_of_the_prefix(
    volumes: tuple[ProjectionQuery[dict[str, object]], list[uuid.UUID]],
) -> None:
    query, runs = volumes
    run = runs[2]
    events = [decode_record(encode(e)) for e in _text_run(run, ["ab", "cde", "f", "", "ghij"] * 3)]
    for n in range(len(events)):
        expected = fold(TextVolume(), events[: n + 1])
        assert query.get_at(run.bytes, at_sequence=n) == expected
        assert query.get_at(run.bytes, as_of=T0 + timedelta(seconds=n, microseconds=5)) == expected
    assert query.get_at(run.bytes, at_sequence=10**6) == query.get(run.bytes)


def test_unknown_and_not_yet_are_told_apart_in_one_read(
    volumes: tuple[ProjectionQuery[dict[str, object]], list[uuid.UUID]],
) -> None:
    query, runs = volumes
    assert query.find_at(uuid.uuid4().bytes, at_sequence=3) is Absent.UNKNOWN
    assert query.find_at(runs[0].bytes, as_of=T0 - timedelta(seconds=1)) is Absent.NOT_YET
    assert query.get_at(runs[0].bytes, as_of=T0 - timedelta(seconds=1)) is None


def test_raw_answers_the_stored_bytes_of_the_same_read(
    volumes: tuple[ProjectionQuery[dict[str, object]], list[uuid.UUID]],
) -> None:
    query, runs = volumes
    raw = query.raw
    assert raw.get(runs[0].bytes) == query.reader.store.get_state(runs[0].bytes)
    assert orjson.loads(raw.get_at(runs[0].bytes, at_sequence=1) or b"") == {
        "run": str(runs[0]),
        "chars": 5,
    }
    many = raw.get_many([runs[1].bytes, b"nope" * 4, runs[1].bytes], as_of=T0)
    assert list(many) == [runs[1].bytes, b"nope" * 4]
    assert orjson.loads(many[runs[1].bytes] or b"")["chars"] == 2
    assert many[b"nope" * 4] is None


def test_scans_page_through_keys_and_indexes(
    volumes: tuple[ProjectionQuery[dict[str, object]], list[uuid.UUID]],
) -> None:
    query, runs = volumes
    keys = [k for k, _ in query.scan()]
    assert keys == sorted(r.bytes for r in runs)
    assert [k for k, _ in query.scan(reverse=True, before=keys[-1])] == keys[-2::-1]
    seen: list[dict[str, object]] = []
    after = None
    while True:
        page, after = query.index(b"r", limit=2, after=after)
        seen += [state for _, state in page]
        if after is None:
            break
    assert sorted(str(s["run"]) for s in seen) == sorted(map(str, runs))


def test_aggregates_have_no_point_in_time(tmp_path: Path) -> None:
    with ProjectionDriver(ToolUsageProjection(), tmp_path) as driver:
        driver.feed([e for n in range(3) for e in sample_run(events=30, seed=n)])
        query = ProjectionQuery(ProjectionReader(driver.store, ToolUsageProjection()), bytes)
        key = next(k for k, _ in query.scan())
        assert query.get(key) == driver.store.get_state(key)
        with pytest.raises(InvalidQueryError, match="not keyed by run"):
            query.get_at(key, at_sequence=0)
        with pytest.raises(InvalidQueryError, match="define index_entity"):
            query.index(b"", limit=1)


def test_projections_load_by_name_or_import_path() -> None:
    assert {"run_state", "tool_usage"} <= set(installed_projections())
    assert load_projection("tool_usage").name == "tool_usage"
    by_path = load_projection("tests.unit.test_reader:TextVolume")
    assert isinstance(by_path, TextVolume)
    with pytest.raises(ConfigError, match=r"unknown projection 'nope'.*run_state.*tool_usage"):
        load_projection("nope")
    with pytest.raises(ConfigError, match="PYTHONPATH"):
        load_projection("no_such_package.folds:Spend")
    with pytest.raises(ConfigError, match="lacks"):
        load_projection("behest.events:TokenUsage")
    with pytest.raises(ConfigError, match="has no 'Missing'"):
        load_projection("tests.unit.test_reader:Missing")


def test_variants_are_the_schema_s_union_branches_with_their_models() -> None:
    from behest.writer_schemas import CURRENT, _union_records

    assert {v.value for v in Variant} == _union_records(CURRENT.raw)
    assert all(v.model.__name__ == v.short_name for v in Variant)
    event = decode_record(encode(sample_run(events=5, seed=1)[0]))
    assert Variant.of(event) is Variant.RUN_STARTED
    assert {v for v in Variant if v.is_terminal} == {
        Variant.RUN_COMPLETED,
        Variant.RUN_FAILED,
        Variant.RUN_CANCELLED,
    }


@given(st.datetimes(timezones=st.just(UTC)))
def test_times_convert_alike_every_way(moment: datetime) -> None:
    micros = to_micros(moment)
    assert from_micros(micros) == moment
    assert format_micros(micros) == format_time(moment)
    assert parse_micros(format_time(moment)) == micros


def test_no_ready_made_projection_reads_variant_names_as_text() -> None:
    folder = Path(__file__).resolve().parents[2] / "projections"
    for path in folder.glob("*.py"):
        text = path.read_text()
        assert 'rpartition(".")' not in text, f"{path.name} strips namespaces: use Variant"
        assert not re.search(r'"behest\.[A-Z]', text), f"{path.name} spells a variant: use Variant"


@pytest.mark.parametrize("command", ["project", "serve", "state"])
def test_every_command_that_takes_a_projection_names_the_known_ones(
    command: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from behest.cli import app

    args = [command, *(["3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00"] if command == "state" else [])]
    result = CliRunner().invoke(app, [*args, "--projection", "nope", "--state-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "unknown projection 'nope'" in result.output
    assert "run_state" in result.output and "tool_usage" in result.output
