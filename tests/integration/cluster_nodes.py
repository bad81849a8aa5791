"""`behest node` processes for the cluster tests: start, await, kill, restart, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from behest.local.ports import free_port


@dataclass
class NodeProcess:
    """One `behest node --workers 1` with its own port and state dir."""

    name: str
    bootstrap: str
    topic: str
    group: str
    state_dir: Path
    session_timeout: float = 6.0
    standby_replicas: int = 0
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NodeProcess:
        command = [
            sys.executable,
            "-m",
            "behest.cli",
            "node",
            "--workers",
            "1",
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state_dir),
            "--group-id",
            self.group,
            "--topic",
            self.topic,
            "--bootstrap-servers",
            self.bootstrap,
            "--session-timeout",
            str(self.session_timeout),
            "--standby-replicas",
            str(self.standby_replicas),
        ]
        with (self.state_dir.parent / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=dict(os.environ))
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the node's main process and its workers, as a crash would."""
        if self.process is None:
            return
        for pid in [*_children(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM: the workers finish their batch and leave the group."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        """The node's last log lines, minus the one-per-request forwarding failures."""
        path = self.state_dir.parent / f"{self.name}.log"
        if not path.exists():
            return ""
        kept = [
            line
            for line in path.read_text(errors="replace").splitlines()
            if "did not answer" not in line
        ]
        return "\n".join(kept[-lines:])

    def cluster(self, client: httpx.Client) -> dict[str, Any] | None:
        try:
            return client.get(f"{self.url}/cluster", timeout=2).json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError):
            return None


def _children(pid: int) -> list[int]:
    """Pids of a process's children (its workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_until_serving(
    nodes: list[NodeProcess], partitions: int, client: httpx.Client, timeout: float = 90.0
) -> None:
    """Until every live node sees all of them in the group and all partitions served."""
    deadline = time.monotonic() + timeout
    urls = sorted(n.url for n in nodes)
    views: list[dict[str, Any] | None] = []
    while time.monotonic() < deadline:
        views = [n.cluster(client) for n in nodes]
        if all(
            v is not None and sorted(v["nodes"]) == urls and len(v["owners"]) == partitions
            for v in views
        ):
            served = [p for v in views if v is not None for p in v["serving"]]
            if sorted(served) == list(range(partitions)):
                return
        time.sleep(0.3)
    raise TimeoutError(
        f"nodes {urls} did not serve all {partitions} partitions in {timeout} s; they saw {views}"
    )
