"""Anyone's projection, from a package of their own, end to end on the real broker.

The projection lives in a package written into a temporary folder (nothing of behest's,
not under `projections/`), found through PYTHONPATH as `package.module:Class`: folded by
`behest project --until-caught-up`, served by `behest serve`, read over HTTP and from
Python, current and at points in time, as the plain fold of each run's events says.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from behest.codec import decode_record, encode
from behest.config import Settings
from behest.emit.producer import EventProducer
from behest.events import AgentEvent
from behest.fold.catalog import load_projection
from behest.fold.projection import fold
from behest.read.projection_query import ProjectionQuery
from behest.read.reader import Absent
from behest.testing import sample_run

pytestmark = pytest.mark.kafka

SPEC = "spendpkg.folds:Spend"
PACKAGE = '''
"""Tokens and tool calls per run: a user's projection, outside behest."""

import uuid

import orjson

from behest import Variant


class Spend:
    name = "spend"
    run_keyed = True

    def key(self, event):
        return uuid.UUID(event["run_id"]).bytes

    def apply(self, state, event):
        variant, body = event["payload"]
        state = dict(state or {"run_id": event["run_id"], "tokens": 0, "tools": 0, "events": 0})
        if variant == Variant.USAGE_RECORDED:
            state["tokens"] += body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
        elif variant == Variant.TOOL_EXECUTION_FINISHED:
            state["tools"] += 1
        state["events"] += 1
        return state

    def encode_state(self, state):
        return orjson.dumps(state)

    def decode_state(self, data):
        return orjson.loads(data)

    def index_keys(self, state):
        tokens = min(state["tokens"], 2**32 - 1).to_bytes(4, "big")
        return [b"t" + tokens + uuid.UUID(state["run_id"]).bytes]
'''
T0 = datetime(2026, 11, 20, 14, 3, 7, tzinfo=UTC)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`spendpkg` in a folder of its own, importable here and in subprocesses."""
    root = tmp_path / "user_code"
    (root / "spendpkg").mkdir(parents=True)
    (root / "spendpkg" / "__init__.py").write_text("")
    (root / "spendpkg" / "folds.py").write_text(PACKAGE)
    monkeypatch.syspath_prepend(str(root))
    return root


def _cli(settings: Settings, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "behest.cli",
        *args,
        "--projection",
        SPEC,
        "--topic",
        settings.topic,
        "--state-dir",
        str(settings.state_dir),
    ]


def _env(package: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(package), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve(settings: Settings, package: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [*_cli(settings, "serve"), "--port", str(port)]
    server = subprocess.Popen(
        command, env=_env(package), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"behest serve exited: {server.communicate()[1].decode()}")
        try:
            if httpx.get(f"{url}/projections", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    server.communicate(timeout=30)
    raise AssertionError("behest serve did not answer within 30 s")


def test_a_projection_of_ones_own_is_folded_served_and_read_back_in_time(
    settings: Settings, package: Path
) -> None:
    runs = [sample_run(events=40, seed=n, start=T0 + timedelta(minutes=n)) for n in range(4)]
    with EventProducer(settings) as producer:
        producer.emit_many([e for run in runs for e in run]).result(timeout=60)

    folded = subprocess.run(
        [
            *_cli(settings, "project"),
            "--until-caught-up",
            "--bootstrap-servers",
            settings.bootstrap_servers,
        ],
        env=_env(package),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert folded.returncode == 0, folded.stderr[-3000:]
    assert "caught up" in folded.stderr

    spend = load_projection(SPEC)
    expected = {
        run[0].run_id: [fold(spend, [_record(e) for e in run[: n + 1]]) for n in range(len(run))]
        for run in runs
    }

    # From Python: current, by sequence, by time; unknown and not-yet told apart.
    with ProjectionQuery.open(settings, spend) as query:
        for run in runs:
            key, history = run[0].run_id.bytes, expected[run[0].run_id]
            assert query.get(key) == history[-1]
            for n in (0, 5, 17, len(run) - 2):
                assert query.get_at(key, at_sequence=n) == history[n]
                assert query.get_at(key, as_of=run[n].timestamp) == history[n]
        assert query.find_at(uuid.uuid4().bytes) is Absent.UNKNOWN
        before = runs[0][0].timestamp - timedelta(seconds=1)
        assert query.find_at(runs[0][0].run_id.bytes, as_of=before) is Absent.NOT_YET
        listed, _ = query.index(b"t", limit=10)
        assert len(listed) == len(runs)

    # Over HTTP, from `behest serve --projection spendpkg.folds:Spend`.
    server, url = _serve(settings, package)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/projections").json() == {
                "projections": [{"name": "spend", "run_keyed": True}]
            }
            run = runs[1]
            run_id, history = run[0].run_id, expected[run[0].run_id]
            assert client.get(f"/projections/spend/states/{run_id}").json() == history[-1]
            at = client.get(f"/projections/spend/states/{run_id}", params={"at_sequence": 7})
            assert at.json() == history[7]
            as_of = run[11].timestamp.isoformat()
            by_time = client.get(f"/projections/spend/states/{run_id}", params={"as_of": as_of})
            assert by_time.json() == history[11]
            missing = str(uuid.uuid4())
            batch = client.post(
                "/projections/spend/states/batch", json={"keys": [str(run_id), missing]}
            )
            assert batch.json() == {"states": {str(run_id): history[-1]}, "missing": [missing]}
            unknown = client.get(f"/projections/spend/states/{missing}")
            assert unknown.status_code == 404
            assert "is unknown" in unknown.json()["error"]
            early = (run[0].timestamp - timedelta(seconds=1)).isoformat()
            not_yet = client.get(f"/projections/spend/states/{run_id}", params={"as_of": early})
            assert not_yet.status_code == 404
            assert "had no event" in not_yet.json()["error"]
            page = client.get("/projections/spend/index/74", params={"reverse": "true"}).json()
            tokens = [s["state"]["tokens"] for s in page["states"]]
            assert tokens == sorted(tokens, reverse=True) and len(tokens) == len(runs)
            assert client.get(f"/runs/{run_id}").status_code == 404  # run_state not served
    finally:
        server.terminate()
        server.communicate(timeout=30)  # waits, and closes the pipe

    # And `behest state KEY --projection ...`, at a point in time.
    shown = subprocess.run(
        [*_cli(settings, "state", str(run_id)), "--at-sequence", "3"],
        env=_env(package),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout) == history[3]


def _record(event: AgentEvent) -> object:
    return decode_record(encode(event))
