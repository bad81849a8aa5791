"""Standard tooling: `behest --version`, `behest serve --wait`, and one Kafka version for the
local broker, the tests' container and docker/compose.yml."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

import httpx
from typer.testing import CliRunner

from behest import codec
from behest.cli import app
from behest.local.ports import free_port
from behest.local.runtime import KAFKA_VERSION
from behest.projections.run_state import RunStateProjection
from behest.testing import ProjectionDriver, sample_run

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    first, codec_line = result.output.strip().splitlines()
    assert first == f"behest {version('behest')}"
    assert codec_line == f"codec: {codec.implementation()}"


def test_commands_still_run_beside_the_version_option() -> None:
    result = CliRunner().invoke(app, ["state", "--help"])
    assert result.exit_code == 0
    assert "RUN_ID" in result.output.upper()


def test_one_kafka_version_for_the_local_broker_the_tests_and_compose() -> None:
    compose = (ROOT / "docker" / "compose.yml").read_text()
    images = re.findall(r"apache/kafka:([\w.\-]+)", compose)
    assert images, "compose.yml names no apache/kafka image"
    assert set(images) == {KAFKA_VERSION}
    conftest = (ROOT / "tests" / "integration" / "conftest.py").read_text()
    assert 'f"apache/kafka:{KAFKA_VERSION}"' in conftest


def test_the_image_installs_a_wheel_and_ignores_local_clutter() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "pip install --no-deps -e" not in dockerfile
    assert "pip wheel" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    for clutter in (".venv", ".cache", ".git"):
        assert clutter in ignored


def test_serve_waits_for_the_projector_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    port = free_port()
    argv = [sys.executable, "-c", "from behest.cli import app; app()", "serve",
            "--state-dir", str(state_dir), "--port", str(port), "--wait", "60"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        run = sample_run(uuid.uuid4(), events=10, seed=3)
        with ProjectionDriver(RunStateProjection(), state_dir) as driver:  # the "projector"
            driver.feed(run)
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"http://127.0.0.1:{port}/runs/{run[0].run_id}", timeout=1)
                if answer.status_code == 200:
                    break
            assert time.monotonic() < deadline, "behest serve never served the state"
            time.sleep(0.2)
        assert answer.json()["event_count"] == len(run)
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()


def test_serve_without_wait_still_fails_at_once_with_a_hint(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "behest project" in result.output
