"""Every `curl` line of the README, run as written (only the address changes) against a
real server over a real RocksDB holding the run the README names: each answers 2xx."""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from behest.config import Settings
from behest.projections.run_state import RunStateProjection
from behest.read.query import RunStateQuery
from behest.read.server import BackgroundServer
from behest.testing import ProjectionDriver, sample_run

README = Path(__file__).resolve().parents[2] / "README.md"
SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
README_RUN = uuid.UUID("3f2c9a1e-8b4d-4c6f-9e2a-1b7d5c3e9f00")
README_ADDRESS = "localhost:8000"


def readme_curls() -> list[str]:
    """Each curl command of the README that talks to the API (`a; b` counts as two)."""
    commands = []
    for block in SHELL_BLOCK.findall(README.read_text()):
        for line in block.splitlines():
            code = line.split("  #", 1)[0].strip()
            for command in code.split(";"):
                if command.strip().startswith("curl ") and README_ADDRESS in command:
                    commands.append(command.strip())
    return commands


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`behest serve`'s app over a store holding the README's run (events from 14:03:00)."""
    state_dir = tmp_path_factory.mktemp("state")
    events = sample_run(
        README_RUN, events=30, seed=1, start=datetime(2026, 11, 20, 14, 3, tzinfo=UTC)
    )
    with ProjectionDriver(RunStateProjection(), state_dir) as driver:
        driver.feed(events)
    settings = Settings(state_dir=state_dir)
    with RunStateQuery.open(settings) as query, BackgroundServer(query) as running:
        yield f"{running.host}:{running.port}"


def test_the_readme_shows_curl_lines() -> None:
    commands = readme_curls()
    assert len(commands) >= 6, commands
    assert any("-X POST" in c and "-d" in c and "Content-Type" not in c for c in commands)


@pytest.mark.parametrize("command", readme_curls())
def test_each_readme_curl_line_answers_2xx(server: str, command: str) -> None:
    argv = shlex.split(command.replace(README_ADDRESS, server))
    # as written, plus: print only the status, give up on a stream after 5 s
    argv[1:1] = ["--silent", "--show-error", "--max-time", "5", "--output", "/dev/null",
                 "--write-out", "%{http_code}"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    status = int(done.stdout.strip() or 0)
    assert 200 <= status < 300, f"{command} -> {status} {done.stderr}"
    assert done.returncode in (0, 28), done.stderr  # 28: a live stream cut at --max-time
