"""Projections by name (`behest.fold.catalog`): behest's own are found even when the
installed metadata predates the `behest.projections` entry-point group."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from behest.fold.catalog import BUILT_IN, ENTRY_POINT_GROUP, installed_projections, load_projection
from behest.projections import RunStateProjection

ROOT = Path(__file__).resolve().parents[2]


def stale_metadata(folder: Path) -> Path:
    """behest's metadata as an install made before the entry-point group wrote it."""
    info = folder / "behest-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: behest\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nbehest = behest.cli:app\n")
    return folder


def test_built_in_is_what_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared[ENTRY_POINT_GROUP] == BUILT_IN


def test_stale_metadata_still_finds_behests_own_projections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(stale_metadata(tmp_path)))  # found before the real one
    assert not any(ep.name == "run_state" for ep in entry_points(group=ENTRY_POINT_GROUP))
    assert set(installed_projections()) >= set(BUILT_IN)
    assert isinstance(load_projection("run_state"), RunStateProjection)
    assert load_projection("tool_usage").name == "tool_usage"


def test_the_command_line_takes_run_state_with_stale_metadata(tmp_path: Path) -> None:
    """What a user of an old `.venv` runs: `--projection run_state` is understood (the
    command then fails only for want of a state dir)."""
    stale = stale_metadata(tmp_path / "meta")
    script = f"import sys; sys.path.insert(0, {str(stale)!r}); from behest.cli import app; app()"
    command = [sys.executable, "-c", script, "state", "00000000-0000-4000-8000-000000000000"]
    result = subprocess.run(
        [*command, "--projection", "run_state", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "unknown projection" not in result.stderr
    assert result.returncode == 1 and "error:" in result.stderr  # no state there yet


def test_a_package_may_still_declare_its_own() -> None:
    installed = installed_projections()
    assert installed["run_state"].value == BUILT_IN["run_state"]
    assert all(ep.group == ENTRY_POINT_GROUP for ep in installed.values())
