"""`behest demo` in a quick mode: what it prints matches the states it queried."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

from rich.console import Console

from behest.config import Settings
from behest.local.demo import run_demo, short_id
from behest.read.query import RunStateQuery


def test_demo_prints_the_states_it_queried(bootstrap_servers: str, tmp_path: Path) -> None:
    settings = Settings(
        bootstrap_servers=bootstrap_servers,
        topic=f"demo-{uuid.uuid4().hex[:12]}",
        state_dir=tmp_path / "state",
    )
    screen = io.StringIO()
    console = Console(file=screen, width=200, force_terminal=False, color_system=None)

    report = run_demo(settings, runs=24, concurrency=6, seed=7, port=0, console=console)
    text = screen.getvalue()

    assert report.summary.runs == 24
    assert report.http_status == 200
    assert len(report.shown) == 12
    with RunStateQuery.open(settings) as query:  # the projector has stopped: read afresh
        for shown in report.shown:
            stored = query.get(shown.run_id)
            assert stored == shown
            row = next(line for line in text.splitlines() if short_id(shown.run_id) in line)
            cells = row.split()
            assert shown.status.value in cells
            assert str(shown.total_usage.total_tokens) in cells
            assert str(shown.event_count) in cells
            assert shown.model in cells
        assert report.point_in_time is not None
        past, now, as_of = report.point_in_time
        assert query.get_at(now.run_id, as_of=as_of) == past
        assert past.event_count < now.event_count
        active, _ = query.list_runs(active=True, limit=1000)
        assert report.active_reloaded == len(active) == report.summary.statuses.get("active", 0)
    assert f"{report.summary.events:,} events of 24 runs" in text
    assert "as of" in text and "batch reload" in text


def test_demo_command_exits_cleanly(bootstrap_servers: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BEHEST_BOOTSTRAP_SERVERS": bootstrap_servers,
        "BEHEST_TOPIC": f"demo-cli-{uuid.uuid4().hex[:12]}",
        "BEHEST_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "behest.cli",
            "demo",
            "--runs",
            "10",
            "--concurrency",
            "4",
            "--port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Run states" in done.stdout
    assert "throughput" in done.stdout
