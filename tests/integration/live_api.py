"""A projector folding a test's topic on a thread, and the HTTP API over its state, for the
watch, console and HTTP API tests (`with running_api(settings, group) as live: ...`)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from behest.codec import decode_record, encode
from behest.config import Settings
from behest.emit.producer import Delivery, EventProducer
from behest.errors import StoreError
from behest.events import AgentEvent
from behest.fold.projection import fold
from behest.fold.projector import Projector
from behest.projections.run_state import RunStateProjection
from behest.read.query import RunStateQuery
from behest.read.server import BackgroundServer
from behest.testing import sample_run

WAIT = 60.0
PROJECTION = RunStateProjection()


@dataclass
class Live:
    settings: Settings
    projector: Projector
    query: RunStateQuery
    producer: EventProducer
    url: str
    client: httpx.Client

    def emit(self, events: Sequence[AgentEvent]) -> Delivery:
        """Produce `events` in order; the last one's delivery."""
        futures = [self.producer.emit(event) for event in events]
        return [future.result(timeout=WAIT) for future in futures][-1]

    def emit_and_wait(self, events: Sequence[AgentEvent]) -> Delivery:
        delivery = self.emit(events)
        self.query.wait_for(delivery, timeout=WAIT)
        return delivery


@contextlib.contextmanager
def running_api(settings: Settings, unique_group: str, *, warm: bool = True) -> Iterator[Live]:
    """A projector folding the test's topic on a thread, and the API over its state.
    `warm`: fold a first event (a run of its own) before opening the store, rather than
    open it as the projector creates it."""
    projector = Projector(settings, group_id=unique_group, poll_timeout=0.05)
    worker = threading.Thread(target=projector.run, daemon=True)
    worker.start()
    try:
        with EventProducer(settings) as producer:
            if warm:  # the store exists once the projector folded something
                producer.emit(sample_run(events=3, seed=1)[0]).result(timeout=WAIT)
            with (
                _open_query(settings) if warm else RunStateQuery.open(settings) as query,
                BackgroundServer(query, metrics_source=lambda: projector.metrics) as server,
                httpx.Client(base_url=server.url, timeout=10) as client,
            ):
                yield Live(settings, projector, query, producer, server.url, client)
    finally:
        projector.stop()
        worker.join(30)
        projector.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def behest_command(settings: Settings, *args: str) -> list[str]:
    """argv of the `behest` command in a process of its own, on the test's broker, topic
    and state dir."""
    return [
        sys.executable, "-c", "from behest.cli import app; app()", *args,
        "--bootstrap-servers", settings.bootstrap, "--topic", settings.topic,
        "--state-dir", str(settings.state_dir),
    ]  # fmt: skip


@contextlib.contextmanager
def behest_serve(settings: Settings) -> Iterator[str]:
    """`behest serve` in its own process on a free port; its URL once it answers; stopped
    on exit."""
    port = free_port()
    process = subprocess.Popen(
        [*behest_command(settings, "serve"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "behest serve did not answer in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def _open_query(settings: Settings) -> RunStateQuery:
    """The query, once the projector has created its store."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return RunStateQuery.open(settings)
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def expected(events: Sequence[AgentEvent]) -> dict[str, Any] | None:
    state = fold(PROJECTION, [decode_record(encode(e)) for e in events])
    return None if state is None else orjson.loads(PROJECTION.encode_state(state))
