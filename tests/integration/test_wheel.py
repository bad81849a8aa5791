"""The built wheel, installed in a fresh venv beside a user's own `projections` package.

The editable install of the checkout hides packaging mistakes (a missing subpackage, schemas
left out, a top-level name that collides with a user's); this test installs what users get.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

from tests.integration.test_readme import python_snippets

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_wheel_installs_beside_a_user_projections_package(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(dist),
            str(ROOT),
        ],
        timeout=300,
    )
    (wheel,) = dist.glob("behest-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "behest/projections/run_state.py" in names
    assert "behest/schemas/agent_event.avsc" in names
    assert not any(name.startswith("projections/") for name in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = str(venv / "bin" / "python")
    # The user's service: a package of its own named `projections`, first on the path.
    service = tmp_path / "service"
    (service / "projections").mkdir(parents=True)
    (service / "projections" / "__init__.py").write_text("MINE = True\n")
    _run([python, "-m", "pip", "install", "--quiet", f"{wheel}[server]"], timeout=600)

    script = service / "main.py"
    script.write_text(
        "import projections\nassert projections.MINE\n"
        "import behest, behest.projections\n"
        f"assert behest.__file__.startswith({str(venv)!r}), behest.__file__\n"
        + "\n\n".join(python_snippets())
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "BEHEST_BOOTSTRAP_SERVERS": bootstrap_servers,
        "BEHEST_TOPIC": f"wheel-{uuid.uuid4().hex[:12]}",
        "BEHEST_STATE_DIR": str(tmp_path / "state"),
    }
    done = _run([python, str(script)], cwd=service, env=env, timeout=180)
    assert "events folded" in done.stdout
