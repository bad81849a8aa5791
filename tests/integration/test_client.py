"""`RunStateClient` answers exactly what `RunStateQuery` answers, over a real HTTP API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from live_api import WAIT, running_api

from behest.client import RunStateClient
from behest.config import Settings
from behest.emit.producer import EventProducer
from behest.errors import InvalidQueryError, WaitTimeoutError
from behest.read.query import RunStateQuery
from behest.testing import sample_run


@pytest.fixture
def served(
    settings: Settings, unique_group: str
) -> Iterator[tuple[RunStateQuery, RunStateClient, EventProducer]]:
    with (
        running_api(settings, unique_group, warm=False) as live,
        RunStateClient(live.url) as client,
    ):
        yield live.query, client, live.producer


def test_the_client_reads_what_the_query_reads(
    served: tuple[RunStateQuery, RunStateClient, EventProducer],
) -> None:
    query, client, producer = served
    runs = [sample_run(events=40 + 10 * i, seed=i) for i in range(4)]
    futures = [producer.emit(event) for events in runs for event in events]
    last = [future.result(timeout=WAIT) for future in futures][-1]
    deliveries = [f.result() for f in futures]

    for delivery in deliveries[-4:]:
        client.wait_for(delivery, timeout=WAIT)  # read your writes, over HTTP
    query.wait_for(last, timeout=WAIT)

    ids = [events[0].run_id for events in runs]
    for run_id, events in zip(ids, runs, strict=True):
        assert client.get(run_id) == query.get(run_id)
        assert client.raw.get(run_id) == query.raw.get(run_id)
        assert client.get_at(run_id, at_sequence=17) == query.get_at(run_id, at_sequence=17)
        moment = events[20].timestamp + timedelta(microseconds=1)
        assert client.get_at(run_id, as_of=moment) == query.get_at(run_id, as_of=moment)
        assert client.list_events(run_id, from_sequence=5, limit=7) == query.list_events(
            run_id, from_sequence=5, limit=7
        )
    unknown = uuid.uuid4()
    assert client.get(unknown) is None
    assert client.list_events(unknown) == []
    assert client.get_many([*ids, unknown, ids[0]]) == query.get_many([*ids, unknown, ids[0]])
    pages, cursor = [], None
    while True:
        page, cursor = client.list_runs(limit=3, cursor=cursor)
        pages += page
        if cursor is None:
            break
    assert pages == query.list_runs(limit=10)[0]
    assert client.last_staleness is None


def test_bad_input_and_a_write_never_folded_raise_what_the_query_raises(
    served: tuple[RunStateQuery, RunStateClient, EventProducer],
) -> None:
    _, client, _ = served
    with pytest.raises(InvalidQueryError, match=r"not a UUID|run id"):
        client.get("not-a-run")
    with pytest.raises(InvalidQueryError, match="status"):
        client.list_runs(status="sleeping")
    with pytest.raises(WaitTimeoutError):
        client.wait_for((0, 10**9), timeout=0.5)


def test_wait_refuses_a_position_that_is_not_one(
    served: tuple[RunStateQuery, RunStateClient, EventProducer],
) -> None:
    _, client, _ = served
    with httpx.Client(base_url=client.base_url) as http:
        for params in (
            {"partition": -1, "offset": 0},
            {"partition": 0, "offset": "x"},
            {"offset": 0},
            {"partition": 0, "offset": 0, "timeout": 31},
        ):
            answer = http.get("/wait", params=params)
            assert answer.status_code == 400, params
            assert answer.json()["error"]
