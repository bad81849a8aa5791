"""The HTTP API over real sockets: uvicorn on 127.0.0.1, httpx as the client."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from behest.errors import StoreError
from behest.events import AgentEvent, RunState
from behest.fold.heartbeat import Heartbeat, HeartbeatWriter, heartbeat_path
from behest.fold.progress import ProjectorMetrics
from behest.fold.store import StateStore
from behest.projections.run_state import RunStateProjection
from behest.read.health import ProjectorWatch
from behest.read.http import MAX_BODY_BYTES
from behest.read.query import MAX_BATCH, RunStateQuery
from behest.read.server import BackgroundServer
from behest.testing import ProjectionDriver, sample_run
from tests.unit.strategies import sample_events

RFC3339_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@dataclass
class Fixture:
    url: str
    client: httpx.Client
    query: RunStateQuery
    runs: list[list[AgentEvent]]
    every_variant: list[AgentEvent]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    """Twelve realistic runs a minute apart plus one with every event variant, served."""
    runs = [sample_run(events=30, seed=n, start=START + timedelta(minutes=n)) for n in range(12)]
    every_variant = sample_events(uuid.uuid4())
    with ProjectionDriver(
        RunStateProjection(), tmp_path_factory.mktemp("http"), snapshot_every=8
    ) as driver:
        driver.feed([e for run in runs for e in run] + every_variant)
        query = RunStateQuery(driver.store)
        with (
            BackgroundServer(query) as server,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            yield Fixture(server.url, client, query, runs, every_variant)


def _run(api: Fixture, n: int = 0) -> str:
    return str(api.runs[n][0].run_id)


# --- the answers ------------------------------------------------------------------------------


def test_get_run_serves_the_contract_json_as_stored(api: Fixture) -> None:
    run_id = _run(api, 3)
    answer = api.client.get(f"/runs/{run_id}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.content == api.query.raw.get(run_id)
    state = answer.json()
    assert set(state) == {
        "run_id", "session_id", "status", "provider", "model", "metadata", "iteration",
        "total_usage", "last_finish", "last_error", "event_count", "created_at", "updated_at",
        "sequence",
    }  # fmt: skip
    assert state["run_id"] == run_id
    assert state["sequence"] == api.runs[3][-1].sequence
    assert RFC3339_MICROS.match(state["created_at"])
    assert RFC3339_MICROS.match(state["updated_at"])
    RunState.model_validate(state)


def test_each_request_is_routed_as_the_router_would_with_its_own_parameters(
    api: Fixture,
) -> None:
    """Routing decisions are remembered per path shape: every run id still gets its own
    state, and the paths an earlier route claims keep going to it."""
    for n in (0, 1, 2, 0):
        answer = api.client.get(f"/runs/{_run(api, n)}")
        assert answer.json()["run_id"] == _run(api, n)
    upper = _run(api, 4).upper()  # another spelling of the same id, another path
    assert api.client.get(f"/runs/{upper}").json()["run_id"] == _run(api, 4)
    assert api.client.get("/runs/batch").status_code == 405  # not a run id
    assert api.client.get("/runs/not-a-uuid").status_code == 400


def test_get_run_at_a_sequence_or_time(api: Fixture) -> None:
    events = api.runs[5]
    run_id = _run(api, 5)
    by_sequence = api.client.get(f"/runs/{run_id}", params={"at_sequence": 12})
    assert by_sequence.status_code == 200
    assert by_sequence.json()["sequence"] == 12
    assert by_sequence.content == api.query.raw.get_at(run_id, at_sequence=12)

    moment = events[12].timestamp
    for text in (
        moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        moment.astimezone().isoformat(),  # the local offset, '+' encoded by httpx
    ):
        by_time = api.client.get(f"/runs/{run_id}", params={"as_of": text})
        assert by_time.status_code == 200, by_time.text
        assert by_time.content == by_sequence.content
    # a '+' left unencoded in a URL arrives as a space; still understood
    plus = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"
    assert api.client.get(f"{api.url}/runs/{run_id}?as_of={plus}").content == by_sequence.content


def test_unknown_runs_and_points_before_the_first_event_are_404(api: Fixture) -> None:
    unknown = uuid.uuid4()
    answer = api.client.get(f"/runs/{unknown}")
    assert answer.status_code == 404
    assert answer.json() == {"error": f"run {unknown} is unknown", "detail": None}
    before = (api.runs[0][0].timestamp - timedelta(seconds=1)).isoformat()
    early = api.client.get(f"/runs/{_run(api)}", params={"as_of": before})
    assert early.status_code == 404
    assert "had no event as of" in early.json()["error"]


def test_batch_returns_states_in_order_and_the_missing_ids(api: Fixture) -> None:
    unknown = str(uuid.uuid4())
    asked = [_run(api, 2), unknown, _run(api, 0), _run(api, 2).upper()]
    answer = api.client.post("/runs/batch", json={"run_ids": asked})
    assert answer.status_code == 200
    body = answer.json()
    assert [s["run_id"] for s in body["runs"]] == [_run(api, 2), _run(api, 0)]
    assert body["missing"] == [unknown]
    assert body["runs"][0] == orjson.loads(api.query.raw.get(_run(api, 2)) or b"")

    moment = api.runs[1][0].timestamp.isoformat()
    then = api.client.post(
        "/runs/batch", json={"run_ids": [_run(api, 0), _run(api, 1), _run(api, 2)], "as_of": moment}
    ).json()
    assert [s["sequence"] for s in then["runs"]] == [api.runs[0][-1].sequence, 0]
    assert then["missing"] == [_run(api, 2)]  # it started a minute later
    assert api.client.post("/runs/batch", json={"run_ids": []}).json() == {
        "runs": [],
        "missing": [],
    }


def test_list_runs_pages_newest_first_with_filters(api: Fixture) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = api.client.get("/runs", params=params).json()
        seen += [s["run_id"] for s in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = [*api.runs, api.every_variant]
    created = {str(run[0].run_id): run[0].timestamp for run in everything}
    assert sorted(seen) == sorted(created)
    assert seen == sorted(created, key=lambda r: created[r], reverse=True)

    failed = api.client.get("/runs", params={"status": "failed", "limit": 1000}).json()
    assert failed["next_cursor"] is None
    assert all(s["status"] == "failed" for s in failed["runs"])
    assert len(failed["runs"]) == sum(
        1 for run in everything if run[-1].payload.type == "RunFailed"
    )
    active = api.client.get("/runs", params={"active": "true"}).json()["runs"]
    assert all(s["status"] not in {"completed", "failed", "cancelled"} for s in active)
    session = str(api.runs[4][0].payload.session_id)  # type: ignore[union-attr]
    mine = api.client.get("/runs", params={"session_id": session}).json()["runs"]
    assert [s["run_id"] for s in mine] == [_run(api, 4)]


def test_events_come_in_sequence_order_as_envelope_and_payload(api: Fixture) -> None:
    run_id = str(api.every_variant[0].run_id)
    answer = api.client.get(f"/runs/{run_id}/events", params={"limit": 1000})
    assert answer.status_code == 200
    events = answer.json()["events"]
    assert [AgentEvent.model_validate(e) for e in events] == api.every_variant
    for event in events:
        assert set(event) == {"event_id", "run_id", "sequence", "timestamp", "payload"}
        assert "type" in event["payload"]
        assert RFC3339_MICROS.match(event["timestamp"])
    page = api.client.get(f"/runs/{run_id}/events", params={"from_sequence": 3, "limit": 2})
    assert [e["sequence"] for e in page.json()["events"]] == [3, 4]
    past_the_end = api.client.get(f"/runs/{run_id}/events", params={"from_sequence": 999})
    assert past_the_end.json() == {"events": []}
    assert api.client.get(f"/runs/{uuid.uuid4()}/events").status_code == 404


def test_healthz_says_how_fresh_answers_are(api: Fixture) -> None:
    health = api.client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["offsets"] == {"0": sum(len(r) for r in api.runs) + len(api.every_variant)}
    assert RFC3339_MICROS.match(health["synced_at"])


def test_metrics_time_each_route_and_report_freshness(api: Fixture) -> None:
    api.client.get(f"/runs/{_run(api)}")
    text = api.client.get("/metrics").text
    assert re.search(
        r'behest_http_request_duration_seconds_count\{method="GET",route="/runs/\{run_id\}",'
        r'status="200"\} [1-9]',
        text,
    )
    assert 'behest_query_folded_offset{partition="0",topic="behest.agent-events"}' in text
    assert "behest_query_sync_age_seconds" in text
    assert "behest_projector_lag" not in text  # no projector in this process
    assert "behest_projector_up" not in text  # nor a heartbeat watched


def test_metrics_count_unusual_methods_together(api: Fixture) -> None:
    answer = api.client.request("PROPFIND", f"/runs/{_run(api)}")
    assert answer.status_code == 405
    assert "PROPFIND" in answer.json()["error"]
    text = api.client.get("/metrics").text
    assert 'method="other",route="/runs/{run_id}",status="405"' in text
    assert "PROPFIND" not in text


def test_openapi_describes_every_route_with_its_models(api: Fixture) -> None:
    spec = api.client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) == {
        "/runs/{run_id}",
        "/runs/batch",
        "/runs",
        "/runs/{run_id}/events",
        "/runs/{run_id}/watch",
        "/runs/watch",
        "/projections",
        "/projections/{name}/states/{key}",
        "/projections/{name}/states/batch",
        "/projections/{name}/states",
        "/projections/{name}/index/{prefix}",
        "/wait",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    ok = {
        ("/runs/{run_id}", "get"): "RunState",
        ("/runs/batch", "post"): "BatchResponse",
        ("/runs", "get"): "RunList",
        ("/runs/{run_id}/events", "get"): "EventList",
        ("/wait", "get"): "Folded",
        ("/healthz", "get"): "Health",
        ("/readyz", "get"): "Readiness",
    }
    for (path, method), model in ok.items():
        responses = paths[path][method]["responses"]
        schema = responses["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}
        if path not in {"/healthz", "/readyz"}:
            error = responses["4XX"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorBody"}
            assert "422" not in responses


# --- bad input: always a 4xx with a JSON body that says what is wrong -------------------------

RUN = "3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("GET", "/runs/not-a-uuid", None, 400, "'not-a-uuid' is not a run id"),
        ("GET", f"/runs/{RUN}?at_sequence=-1", None, 400, "'at_sequence': Input should be"),
        ("GET", f"/runs/{RUN}?at_sequence=abc", None, 400, "'at_sequence'"),
        ("GET", f"/runs/{RUN}?at_sequence=99999999999999999999", None, 400, "'at_sequence'"),
        ("GET", f"/runs/{RUN}?as_of=yesterday", None, 400, "not an RFC 3339 time"),
        ("GET", f"/runs/{RUN}?as_of=2026-11-20T10:00:00", None, 400, "has no time zone"),
        ("GET", f"/runs/{RUN}?as_of=2026-11-20T10:00:00Z&at_sequence=1", None, 400, "not both"),
        ("GET", "/runs?status=done", None, 400, "'status': Input should be 'pending'"),
        ("GET", "/runs?limit=0", None, 400, "'limit'"),
        ("GET", "/runs?limit=1001", None, 400, "less than or equal to 1000"),
        ("GET", "/runs?cursor=junk", None, 400, "not one this API issued"),
        ("GET", "/runs?session_id=nope", None, 400, "session_id 'nope' is not a UUID"),
        ("GET", "/runs?active=maybe", None, 400, "'active'"),
        ("GET", f"/runs/{RUN}/events?from_sequence=-1", None, 400, "'from_sequence'"),
        ("GET", f"/runs/{RUN}/events?limit=5000", None, 400, "'limit'"),
        ("POST", "/runs/batch", b'{"run_ids": [', 400, "not valid JSON"),
        ("POST", "/runs/batch", b"[" * 50_000, 400, "not valid JSON"),
        ("POST", "/runs/batch", b"{}", 400, "body field 'run_ids': Field required"),
        ("POST", "/runs/batch", b'{"run_ids": "abc"}', 400, "'run_ids'"),
        ("POST", "/runs/batch", b'{"run_ids": ["x"]}', 400, "'x' is not a run id"),
        ("POST", "/runs/batch", b'{"run_ids": [], "as_of": "noon"}', 400, "RFC 3339"),
        ("POST", "/runs/batch", b'{"run_ids": [], "ids": []}', 400, "'ids'"),
        (
            "POST",
            "/runs/batch",
            orjson.dumps({"run_ids": [RUN] * (MAX_BATCH + 1)}),
            400,
            "at most 1000 items",
        ),
        ("POST", "/runs/batch", b" " * (MAX_BODY_BYTES + 1), 413, "over the 1048576-byte limit"),
        ("GET", "/runs/batch", None, 405, "use POST /runs/batch"),
        ("DELETE", f"/runs/{RUN}", None, 405, f"DELETE /runs/{RUN} is not allowed"),
        ("GET", "/nowhere", None, 404, "no endpoint GET /nowhere"),
    ],
)
def test_bad_input_is_a_4xx_that_says_what_is_wrong(
    api: Fixture, method: str, path: str, body: bytes | None, status: int, says: str
) -> None:
    headers = {"content-type": "application/json"} if body is not None else {}
    answer = api.client.request(method, path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()
    assert set(error) == {"error", "detail"}
    assert says in error["error"]


# --- server-side failures: still JSON, and logged ---------------------------------------------


class BrokenStore(StateStore):
    """A store whose disk fails on reads of states, and whose index scans have a bug."""

    def get_state(self, key: bytes) -> bytes | None:
        raise StoreError("disk on fire")

    def scan_index(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        raise RuntimeError("a bug")


def test_store_failures_are_503_and_bugs_500_both_json(
    api: Fixture, caplog: pytest.LogCaptureFixture
) -> None:
    store = BrokenStore(api.query.store.path / "p0", secondary=True)
    broken = RunStateQuery(store, owns_store=True)
    with (
        broken,
        BackgroundServer(broken) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for path in (f"/runs/{RUN}", f"/runs/{RUN}/events"):
            store_down = client.get(path)
            assert store_down.status_code == 503
            assert "disk on fire" in store_down.json()["error"]
        bug = client.get("/runs")
        assert bug.status_code == 500
        assert bug.json() == {
            "error": "internal error: the server log has the details",
            "detail": None,
        }
    assert any("unhandled error answering GET /runs" in r.message for r in caplog.records)


def stats() -> ProjectorMetrics:
    figures = ProjectorMetrics("run_state", "behest.run_state", "behest.agent-events")
    figures.lag, figures.lag_seconds = {0: 7, 1: 0}, {0: 2.5, 1: 0.0}
    figures.events_folded, figures.dead_letters, figures.assignments = 1234, 3, 2
    figures.batch_latency.observe(0.02)
    return figures


def test_metrics_include_the_projector_when_a_source_is_given(api: Fixture) -> None:
    with (
        BackgroundServer(api.query, metrics_source=stats) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        text = client.get("/metrics").text
    assert 'behest_projector_lag_records{partition="0",topic="behest.agent-events"} 7.0' in text
    assert 'behest_projector_lag_seconds{partition="0",topic="behest.agent-events"} 2.5' in text
    assert "behest_projector_events_folded_total 1234.0" in text
    assert "behest_projector_dead_letters_total 3.0" in text
    assert 'behest_projector_rebalances_total{event="assigned"} 2.0' in text
    assert 'behest_projector_batch_duration_seconds_bucket{le="0.025"} 1.0' in text
    assert "behest_projector_up" not in text  # no heartbeat watched


def beat(at: float, **fields: Any) -> Heartbeat:
    values: dict[str, Any] = {
        "projection": "run_state",
        "pid": 4242,
        "at": at,
        "started_at": at - 60,
        "assigned": (0, 1),
        "lag": {0: 0, 1: 5},
        "lag_seconds": {0: 0.0, 1: 1.5},
    }
    return Heartbeat(**{**values, **fields})


def test_healthz_and_readyz_judge_the_projector_by_its_heartbeat(
    api: Fixture, tmp_path: Path
) -> None:
    now = time.time()
    watch = ProjectorWatch.of(tmp_path, max_lag=30.0)
    writer = HeartbeatWriter(heartbeat_path(tmp_path, "run_state"))
    with (
        BackgroundServer(api.query, watch=watch) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):

        def look() -> tuple[int, dict[str, Any], dict[str, Any], str]:
            ready = client.get("/readyz")
            return (
                ready.status_code,
                ready.json(),
                client.get("/healthz").json(),
                (client.get("/metrics").text),
            )

        status, ready, health, text = look()  # no projector has ever beaten here
        assert status == 503 and ready["status"] == "not_ready"
        assert "is `behest project` running" in ready["reason"]
        assert health["status"] == "degraded" and health["offsets"]
        assert "behest_projector_up 0.0" in text and "behest_ready 0.0" in text

        writer.write(beat(now))
        status, ready, health, text = look()
        assert (status, ready["status"], ready["reason"]) == (200, "ready", None)
        assert ready["projector"]["lag"] == {"0": 0, "1": 5}
        assert health["status"] == "ok" and health["projector"]["pid"] == 4242
        assert "behest_projector_up 1.0" in text and "behest_ready 1.0" in text
        assert 'behest_projector_lag_records{partition="1",topic="behest.agent-events"} 5.0' in (
            text
        )

        writer.write(beat(now, lag_seconds={0: 0.0, 1: 31.0}))
        status, ready, health, _ = look()
        assert status == 503 and "partition 1 is 31.0 s (5 records) behind" in ready["reason"]
        assert health["status"] == "ok"  # alive, only behind

        writer.write(beat(now, lag_seconds={0: 0.0}))  # partition 1 behind, not folded yet
        assert look()[0] == 503

        writer.write(beat(now - 6.0))  # a projector killed 6 s ago
        status, ready, health, text = look()
        assert status == 503 and "last beat 6." in ready["reason"]
        assert health["status"] == "degraded"
        assert "behest_projector_lag_records" not in text  # a dead projector's lag is no figure

        writer.write(beat(now, stopped=True))
        status, ready, _, _ = look()
        assert status == 503 and "stopped" in ready["reason"]
