"""The query API end to end: events produced through the real broker by `EventProducer`,
folded by a running `Projector`, read over HTTP from a RocksDB secondary that follows it.

Every expectation is the plain fold of what was produced. `wait_for` on the producer's
`Delivery` gives read-your-writes; the server shares that query object (same process),
except in the last test, where `behest serve` runs as its own process beside the projector.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from live_api import WAIT, Live, behest_serve, expected, running_api

from behest.config import Settings
from behest.events import AgentEvent
from behest.testing import sample_run


@pytest.fixture
def live(settings: Settings, unique_group: str) -> Iterator[Live]:
    """A projector folding the test's topic on a thread, and the API over its state."""
    with running_api(settings, unique_group, warm=False) as running:
        yield running


def test_read_your_writes_then_any_point_in_the_past(live: Live) -> None:
    events = sample_run(events=150, seed=1)
    run_id = events[0].run_id
    live.emit_and_wait(events)

    current = live.client.get(f"/runs/{run_id}")
    assert current.status_code == 200
    assert current.json() == expected(events)
    for n in (0, 63, 64, 100):
        then = live.client.get(f"/runs/{run_id}", params={"at_sequence": n})
        assert then.json() == expected(events[: n + 1])
        as_of = events[n].timestamp.isoformat()
        assert live.client.get(f"/runs/{run_id}", params={"as_of": as_of}).json() == (
            expected([e for e in events if e.timestamp <= events[n].timestamp])
        )
    logged = live.client.get(f"/runs/{run_id}/events", params={"limit": 1000}).json()["events"]
    assert [AgentEvent.model_validate(e) for e in logged] == events


def test_a_run_in_progress_then_finished_then_deleted(live: Live) -> None:
    events = sample_run(events=40, seed=2)
    run_id = events[0].run_id
    live.emit_and_wait(events[:10])
    assert live.client.get(f"/runs/{run_id}").json() == expected(events[:10])
    active = live.client.get("/runs", params={"active": "true"}).json()["runs"]
    assert [s["run_id"] for s in active] == [str(run_id)]

    live.emit_and_wait(events[10:])
    finished = live.client.get(f"/runs/{run_id}").json()
    assert finished == expected(events)
    assert live.client.get("/runs", params={"active": "true"}).json()["runs"] == []

    tombstone = live.producer.emit_tombstone(run_id).result(timeout=WAIT)
    live.query.wait_for(tombstone, timeout=WAIT)
    assert live.client.get(f"/runs/{run_id}").status_code == 404
    assert live.client.get(f"/runs/{run_id}/events").status_code == 404


def test_batch_and_listing_over_runs_on_several_partitions(live: Live) -> None:
    runs = [sample_run(events=25, seed=10 + n) for n in range(9)]
    deliveries = [live.emit_and_wait(run) for run in runs]
    assert len({d.partition for d in deliveries}) > 1
    ids = [str(run[0].run_id) for run in runs]
    unknown = str(uuid.uuid4())

    batch = live.client.post("/runs/batch", json={"run_ids": [*ids, unknown]}).json()
    assert batch["runs"] == [expected(run) for run in runs]
    assert batch["missing"] == [unknown]

    listed: list[str] = []
    cursor = None
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = live.client.get("/runs", params=params).json()
        listed += [s["run_id"] for s in page["runs"]]
        if (cursor := page["next_cursor"]) is None:
            break
    by_creation = sorted(runs, key=lambda run: run[0].timestamp, reverse=True)
    assert listed == [str(run[0].run_id) for run in by_creation]

    session = str(runs[3][0].payload.session_id)  # type: ignore[union-attr]
    mine = live.client.get("/runs", params={"session_id": session}).json()["runs"]
    assert mine == [expected(runs[3])]


def test_metrics_and_health_show_the_projector_and_how_fresh_answers_are(live: Live) -> None:
    events = sample_run(events=30, seed=3)
    delivery = live.emit_and_wait(events)
    health = live.client.get("/healthz").json()
    assert health["offsets"][str(delivery.partition)] == delivery.offset + 1
    text = live.client.get("/metrics").text
    assert f"behest_projector_events_folded_total {float(len(events))}" in text
    assert "behest_projector_lag_records{" in text
    assert "behest_projector_lag_seconds{" in text
    folded = (
        f'behest_query_folded_offset{{partition="{delivery.partition}",'
        f'topic="{live.settings.topic}"}} {float(delivery.offset + 1)}'
    )
    assert folded in text


def test_behest_serve_in_its_own_process_follows_the_projector(live: Live) -> None:
    first = sample_run(events=20, seed=4)
    live.emit_and_wait(first)
    with behest_serve(live.settings) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get(f"/runs/{first[0].run_id}").json() == expected(first)
        later = sample_run(events=20, seed=5)
        live.emit_and_wait(later)
        # folded: the server's view syncs within its max_staleness (0.1 s)
        deadline = time.monotonic() + 5
        while (answer := client.get(f"/runs/{later[0].run_id}")).status_code == 404:
            assert time.monotonic() < deadline, "the served view never caught up"
            time.sleep(0.05)
        assert answer.json() == expected(later)
