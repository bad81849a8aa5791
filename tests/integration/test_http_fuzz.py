"""A bounded schemathesis run from /openapi.json against the real server on 127.0.0.1.

Valid and invalid requests alike (schemathesis' positive and negative generation) must
never get a 5xx, and every answer must match what /openapi.json promises: status code,
content type and body schema. Bounded: `MAX_EXAMPLES` cases per operation and mode,
at most 390 requests in all, each with a timeout, so the run stays well under a minute.

Each operation runs as its own Hypothesis test over schemathesis' strategy for it
(`APIOperation.as_strategy`): schemathesis' pytest plugin for schemas loaded at run time
(`schemathesis.pytest.from_fixture`) does not work with pytest 9.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from behest.projections.run_state import RunStateProjection
from behest.read.query import RunStateQuery
from behest.read.server import BackgroundServer
from behest.testing import ProjectionDriver, sample_run

MAX_EXAMPLES = 15
REQUEST_TIMEOUT = 10.0
OPERATIONS = [
    ("GET", "/runs/{run_id}"),
    ("POST", "/runs/batch"),
    ("GET", "/runs"),
    ("GET", "/runs/{run_id}/events"),
    ("GET", "/runs/{run_id}/watch"),
    ("GET", "/runs/watch"),
    ("GET", "/projections"),
    ("GET", "/projections/{name}/states/{key}"),
    ("POST", "/projections/{name}/states/batch"),
    ("GET", "/projections/{name}/states"),
    ("GET", "/projections/{name}/index/{prefix}"),
    ("GET", "/wait"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]
WITHOUT_INPUT = {"/healthz", "/readyz", "/metrics", "/projections"}
WAITS = {"/wait"}
"""Valid input (even with an extra parameter, as negative cases have) waits up to its timeout
by design, then a flagged 503: not fuzzed; test_client checks its bad input."""
STREAMS = {"/runs/{run_id}/watch", "/runs/watch"}
"""Valid input streams until the run ends (or forever): not fuzzed; test_watch checks bad input."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    """The served API's schema, over a few realistic runs."""
    directory = tmp_path_factory.mktemp("fuzz")
    with ProjectionDriver(RunStateProjection(), directory) as driver:
        driver.feed([e for n in range(5) for e in sample_run(events=20, seed=n)])
        with BackgroundServer(RunStateQuery(driver.store)) as server:
            yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_the_schema_lists_exactly_the_operations_fuzzed(api: schemathesis.BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api.get_all_operations()}
    assert found == set(OPERATIONS)


FUZZED = [
    (method, path, mode)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for method, path in OPERATIONS
    if not (mode is GenerationMode.NEGATIVE and path in WITHOUT_INPUT)  # nothing to get wrong
    and path not in WAITS | STREAMS
]


@pytest.mark.parametrize(("method", "path", "mode"), FUZZED)
def test_no_input_gets_a_5xx_or_an_answer_the_schema_does_not_describe(
    api: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def no_server_error(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT)

    no_server_error()
