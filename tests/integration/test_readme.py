"""The README's Python snippets run, in order, against the real broker: they cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_snippets() -> list[str]:
    return FENCE.findall(README.read_text())


def test_readme_has_the_snippets_users_copy() -> None:
    code = "\n".join(python_snippets())
    for needed in ("EventProducer", "AsyncEventProducer", "Projector", "RunStateQuery"):
        assert needed in code, f"the README shows no {needed} snippet"


def test_readme_snippets_run_end_to_end(bootstrap_servers: str, tmp_path: Path) -> None:
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(python_snippets()))
    env = {
        **os.environ,
        "BEHEST_BOOTSTRAP_SERVERS": bootstrap_servers,
        "BEHEST_TOPIC": f"readme-{uuid.uuid4().hex[:12]}",  # the snippet creates it
        "BEHEST_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "events folded" in done.stdout
