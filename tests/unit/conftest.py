"""`codec_path`: run a test module under both codecs, the compiled (C) and the generated
Python one (`pytestmark = pytest.mark.usefixtures("codec_path")`). Module-scoped, so
hypothesis tests may use it; the compiled run is skipped where the extension is not built
or BEHEST_PURE_PYTHON=1 is set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from behest import avro_program, codec


@pytest.fixture(scope="module", params=["compiled", "python"])
def codec_path(request: pytest.FixtureRequest) -> Iterator[str]:
    compiled = request.param == "compiled"
    if compiled and codec.use_compiled(True) is False:
        pytest.skip(f"no compiled codec: {avro_program.unavailable_reason()}")
    codec.use_compiled(compiled)
    try:
        yield request.param
    finally:
        codec.use_compiled(True)
