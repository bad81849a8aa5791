"""A reader registers itself as the codec's schema source; once its store is closed (the
reader object may live on until collected), an unknown fingerprint is still an
`UnknownSchemaError`, not an error of the dead store."""

from __future__ import annotations

from pathlib import Path

import pytest

from behest import codec
from behest.config import Settings
from behest.errors import UnknownSchemaError
from behest.projections.run_state import RunStateProjection
from behest.read.query import RunStateQuery
from behest.testing import ProjectionDriver, sample_run


def test_a_closed_reader_knows_no_schemas(tmp_path: Path) -> None:
    with ProjectionDriver(RunStateProjection(), tmp_path) as driver:
        driver.feed(sample_run(events=5, seed=1))
    query = RunStateQuery.open(Settings(state_dir=tmp_path))
    query.close()  # `query` (and its reader, a schema source) stays alive here
    data = bytearray(codec.encode(sample_run(events=1, seed=2)[0]))
    data[2:10] = bytes.fromhex("0011223344556677")  # a fingerprint nobody knows
    with pytest.raises(UnknownSchemaError):
        codec.decode_record(bytes(data))
    assert query.reader.get_schema(b"\x00" * 8) is None
