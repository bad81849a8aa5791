"""A static member fenced off by the broker rejoins and folds on; a real twin stops it.

The broker fences a static member when another consumer joins with its
`group.instance.id`. After a group coordinator change it can do so with no twin at all
(the answer to the member's own join was lost), so one fencing must not stop a projector,
but a second live holder of the id must, with a clear error. Both are staged here with a
real consumer that joins under the projector's id, on the real broker.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import Consumer

from behest.config import Settings
from behest.errors import MemberFencedError
from behest.fold.projector import FENCES_FORGIVEN, Projector
from tests.integration.test_projector import (
    RUN_STATE,
    as_records,
    expected,
    make,
    mixed,
    produce,
    runs,
    stored,
)


def _twin(projector: Projector, bootstrap: str) -> Consumer:
    """A consumer that joins the projector's group under its static id (fencing it off)."""
    assert projector.instance_id is not None
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": projector.group_id,
            "group.instance.id": projector.instance_id,
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([projector.topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.1)
    return consumer


def _running(projector: Projector) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            projector.run()
        except BaseException as error:  # surfaced by the test
            failures.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failures


def _folded_all(projector: Projector, delivered: list[tuple[int, int]], timeout: float) -> bool:
    ends: dict[int, int] = {}
    for partition, offset in delivered:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(projector.folded_position(p) >= end for p, end in ends.items()):
            return True
        time.sleep(0.1)
    return False


def test_a_fenced_member_rejoins_and_folds_every_event_once(
    settings: Settings, bootstrap_servers: str, caplog: pytest.LogCaptureFixture
) -> None:
    batches = runs(12, seed=7)
    events = mixed(batches)
    half = len(events) // 2
    settings = settings.model_copy(update={"session_timeout": 6.0})
    with make(settings, batch_size=50) as projector:
        thread, failures = _running(projector)
        try:
            delivered = produce(bootstrap_servers, settings.topic, as_records(events[:half]))
            assert _folded_all(projector, delivered, 60)
            _twin(projector, bootstrap_servers).close()  # fences the projector off, then goes
            delivered += produce(bootstrap_servers, settings.topic, as_records(events[half:]))
            assert _folded_all(projector, delivered, 90), failures
            assert thread.is_alive() and failures == []
            assert "fenced member" in caplog.text and "rejoining" in caplog.text
            assert stored(projector) == expected(RUN_STATE, events)
            assert projector.metrics.duplicates == 0
        finally:
            projector.stop()
            thread.join(30)


def test_a_live_twin_of_its_static_id_stops_the_projector_with_a_clear_error(
    settings: Settings, bootstrap_servers: str
) -> None:
    settings = settings.model_copy(update={"session_timeout": 6.0})
    produce(bootstrap_servers, settings.topic, as_records(runs(2)[0]))
    with make(settings) as projector:
        thread, failures = _running(projector)
        twins: list[Any] = []
        deadline = time.monotonic() + 120
        try:
            while thread.is_alive() and time.monotonic() < deadline:
                twins.append(_twin(projector, bootstrap_servers))  # each join fences the other
                time.sleep(1)
            thread.join(30)
        finally:
            projector.stop()
            for twin in twins:
                twin.close()
        assert not thread.is_alive()
        assert len(failures) == 1 and isinstance(failures[0], MemberFencedError)
        assert "is a copy of the state dir" in str(failures[0])
        assert len(twins) > FENCES_FORGIVEN
