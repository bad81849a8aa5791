"""A real single-node Kafka (KRaft) on 127.0.0.1 that behest starts by itself, without Docker.

The broker runs as a detached `java kafka.Kafka` process, on the Java and jars of
`behest.local.runtime`, with the files `behest.local.kraft` renders. A broker is known by
its data dir, which holds everything about it:

    <data dir>/server.properties   KRaft broker+controller config (rewritten each start)
    <data dir>/log4j2.properties   quiet logging: warnings, plus the "started" line
    <data dir>/kafka-logs/         the topics' data (survives stop/start)
    <data dir>/broker.log          the JVM's stdout/stderr (previous run: broker.log.1)
    <data dir>/broker.pid          pid of the running broker
    <data dir>/broker.json         port, controller port, pid, bootstrap, version

so several brokers can run side by side, each in its own data dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from behest.config import DEFAULT_BROKER_PORT, project_home
from behest.errors import BrokerError
from behest.local.kraft import (
    HOST,
    new_cluster_id,
    render_log4j2_properties,
    render_server_properties,
)
from behest.local.ports import answers, free_port, port_in_use
from behest.local.runtime import (
    KAFKA_VERSION,
    LOG4J_VERSION,
    fetch_kafka_jars,
    find_java,
    folder_lock,
    jar_cache_dir,
)

__all__ = [
    "HEAP",
    "BrokerStatus",
    "LocalBroker",
    "default_data_dir",
    "tail",
]

HEAP = "512m"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
LOG_TAIL_LINES = 30

_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
# Starts java in the background and prints its pid, then exits: the broker is orphaned at once,
# so it never lingers as our zombie and outlives the command that started it.
_LAUNCHER = 'java="$1"; log="$2"; shift 2; "$java" "$@" >>"$log" 2>&1 </dev/null & echo $!'


def default_data_dir() -> Path:
    """The data dir `behest broker` uses when none is given."""
    return project_home() / "broker"


@dataclass(frozen=True)
class BrokerStatus:
    """Whether the broker of a data dir runs, where, and under which pid."""

    running: bool
    data_dir: Path
    pid: int | None = None
    port: int | None = None
    already_running: bool = False

    @property
    def bootstrap(self) -> str | None:
        """The `host:port` clients connect to, if it runs."""
        return f"{HOST}:{self.port}" if self.running and self.port else None


# --- pure helpers -----------------------------------------------------------------------------


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a text file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


# --- the broker -------------------------------------------------------------------------------


class LocalBroker:
    """A Kafka broker process owned by a data dir: start it, stop it, ask whether it runs."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        kafka_version: str = KAFKA_VERSION,
        log4j_version: str = LOG4J_VERSION,
        heap: str = HEAP,
        progress: Callable[[str], None] | None = None,
        node_id: int = 1,
        voters: str | None = None,
        cluster_id: str | None = None,
        replication: int = 1,
    ) -> None:
        self.data_dir = Path(data_dir).resolve() if data_dir else default_data_dir().resolve()
        self.kafka_version = kafka_version
        self.log4j_version = log4j_version
        self.heap = heap
        self.progress = progress
        # One node of a local cluster (behest.local.cluster) shares its quorum and cluster id.
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster_id
        self.replication = replication

    def __repr__(self) -> str:
        return f"LocalBroker({str(self.data_dir)!r})"

    # paths

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kafka-logs"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def jar_cache_dir(self) -> Path:
        return jar_cache_dir(self.kafka_version)

    # public API

    def status(self) -> BrokerStatus:
        """Whether this data dir's broker process is alive (it is not probed over the network)."""
        pid = self._read_pid()
        if pid is None or not self._is_our_process(pid):
            return BrokerStatus(running=False, data_dir=self.data_dir)
        port = self._read_state().get("port")
        return BrokerStatus(
            running=True,
            data_dir=self.data_dir,
            pid=pid,
            port=port if isinstance(port, int) else None,
        )

    def start(
        self, port: int = DEFAULT_BROKER_PORT, *, timeout: float = START_TIMEOUT
    ) -> BrokerStatus:
        """Start the broker on `port` (0 picks a free one) and wait until it answers.

        Idempotent: if this data dir's broker already runs and answers, that one is
        returned (with `already_running=True`), whatever port was asked for.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.data_dir / ".lock"):
            current = self.status()
            if current.running and current.pid is not None and current.port is not None:
                self._wait_until_ready(current.pid, current.port, timeout, launched=False)
                return BrokerStatus(
                    running=True,
                    data_dir=self.data_dir,
                    pid=current.pid,
                    port=current.port,
                    already_running=True,
                )
            port = port or free_port()
            pid = self._launch_unlocked(port, self._controller_port(port))
            self._wait_until_ready(pid, port, timeout, launched=True)
            return BrokerStatus(running=True, data_dir=self.data_dir, pid=pid, port=port)

    def launch(self, port: int, controller_port: int) -> int:
        """Start the broker process without waiting for it to answer (a cluster's nodes
        answer only once a majority of them runs); its pid. A running one is kept."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.data_dir / ".lock"):
            current = self.status()
            if current.running and current.pid is not None:
                return current.pid
            return self._launch_unlocked(port, controller_port)

    def _launch_unlocked(self, port: int, controller_port: int) -> int:
        self._forget_pid()
        if port_in_use(port):
            raise BrokerError(
                f"port {port} on {HOST} is already in use (another broker or program); "
                "pick another with --port, or stop what holds it (`behest broker status "
                "--data-dir ...` shows brokers behest started)."
            )
        java = find_java(self.kafka_version)
        libs = fetch_kafka_jars(
            self.jar_cache_dir, self.kafka_version, self.log4j_version, progress=self.progress
        )
        self._write_config(port, controller_port)
        self._format_storage(java, libs)
        pid = self._launch(java, libs)
        self._write_state(pid=pid, port=port, controller_port=controller_port)
        return pid

    def check_alive(self) -> None:
        """Raise `BrokerError` (with the log's tail) unless the broker process runs."""
        pid = self._read_pid()
        if pid is None or not self._is_our_process(pid):
            raise BrokerError(
                f"the Kafka broker of {self.data_dir} is not running; see {self.log_path}. "
                f"Its last lines:\n{tail(self.log_path)}"
            )

    def kill(self) -> bool:
        """SIGKILL the broker, as a crash would; False if it was not running."""
        with folder_lock(self.data_dir / ".lock"):
            pid = self._read_pid()
            if pid is None or not self._is_our_process(pid):
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10.0
            while self._is_our_process(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self._forget_pid()
            return True

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after `timeout`); False if it was not running."""
        if not self.data_dir.exists():
            return False
        with folder_lock(self.data_dir / ".lock"):
            pid = self._read_pid()
            was_running = pid is not None and self._is_our_process(pid)
            if pid is not None and was_running:
                self._terminate(pid, timeout)
            self._forget_pid()
            return was_running

    # start-up steps

    def _controller_port(self, port: int) -> int:
        """The controller port of the last run if still free (a stable quorum address)."""
        previous = self._read_state().get("controller_port")
        if isinstance(previous, int) and previous != port and not port_in_use(previous):
            return previous
        while True:
            candidate = free_port()
            if candidate != port:
                return candidate

    def _write_config(self, port: int, controller_port: int) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(
            render_server_properties(
                port=port,
                controller_port=controller_port,
                log_dir=self.log_dir,
                node_id=self.node_id,
                voters=self.voters,
                replication=self.replication,
            )
        )
        (self.data_dir / "log4j2.properties").write_text(render_log4j2_properties())

    def _java_args(self, libs: Path) -> list[str]:
        """Classpath and logging flags shared by the storage tool and the broker."""
        return [
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            str(libs / "*"),
        ]

    def _format_storage(self, java: str, libs: Path) -> None:
        """Format the log dir for KRaft once; an already formatted dir is left as is."""
        if (self.log_dir / "meta.properties").exists():
            return
        command = [
            java,
            "-Xmx256m",
            *self._java_args(libs),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id or new_cluster_id(),
            "-c",
            str(self.properties_path),
            "-g",
        ]
        try:
            done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                command, capture_output=True, text=True, timeout=120, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting {self.log_dir} took over 120 s; try again.") from exc
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise BrokerError(
                f"kafka StorageTool could not format {self.log_dir} (exit {done.returncode}); "
                f"delete that folder if it holds nothing you need, and start again:\n{output}"
            )

    def _launch(self, java: str, libs: Path) -> int:
        """Start the JVM detached (own session, output to broker.log) and return its pid."""
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name("broker.log.1"))
        command = [
            java,
            str(self.log_path),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            *_JVM_FLAGS,
            *self._java_args(libs),
            "kafka.Kafka",
            str(self.properties_path),
        ]
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell interpolation
            ["/bin/sh", "-c", _LAUNCHER, "behest-broker", *command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            start_new_session=True,
        )
        if done.returncode != 0 or not done.stdout.strip().isdigit():
            raise BrokerError(f"could not launch {java}: {done.stderr.strip() or done.stdout}")
        pid = int(done.stdout.strip())
        self.pid_path.write_text(f"{pid}\n")
        return pid

    def _wait_until_ready(self, pid: int, port: int, timeout: float, *, launched: bool) -> None:
        """Poll until the broker answers a metadata request; fail fast if the process dies."""
        deadline = time.monotonic() + timeout
        bootstrap = f"{HOST}:{port}"
        while True:
            if not self._is_our_process(pid):
                self._forget_pid()
                raise BrokerError(
                    f"the Kafka broker (pid {pid}) exited during start-up; see {self.log_path}. "
                    f"Its last lines:\n{tail(self.log_path)}"
                )
            if answers(bootstrap):
                return
            if time.monotonic() > deadline:
                if launched:
                    self._terminate(pid, STOP_TIMEOUT)
                    self._forget_pid()
                    what = "was stopped"
                else:
                    what = f"still runs: `behest broker stop --data-dir {self.data_dir}`"
                raise BrokerError(
                    f"the Kafka broker (pid {pid}) did not answer at {bootstrap} within "
                    f"{timeout:.0f} s and {what}; see {self.log_path}. Its last lines:\n"
                    f"{tail(self.log_path)}"
                )
            time.sleep(0.25)

    # process bookkeeping

    def _terminate(self, pid: int, timeout: float) -> None:
        """SIGTERM (Kafka shuts down cleanly), SIGKILL if it takes longer than `timeout`."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self._is_our_process(pid):
                    return
                time.sleep(0.1)
        raise BrokerError(f"Kafka broker pid {pid} survived SIGKILL; check `ps -p {pid}`.")

    def _is_our_process(self, pid: int) -> bool:
        """True if `pid` is alive and is the broker of this data dir (not a reused pid)."""
        proc = Path("/proc") / str(pid)
        if Path("/proc/self").exists():
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                return False
            if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
                return False
            args = [arg.decode(errors="replace") for arg in cmdline]
            return "kafka.Kafka" in args and str(self.properties_path) in args
        try:  # no /proc (macOS): liveness only
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, *, pid: int | None, port: int, controller_port: int) -> None:
        state = {
            "pid": pid,
            "port": port,
            "controller_port": controller_port,
            "bootstrap": f"{HOST}:{port}",
            "kafka_version": self.kafka_version,
            "started_at": datetime.now(UTC).isoformat(),
        }
        self.state_path.write_text(json.dumps(state, indent=1) + "\n")

    def _forget_pid(self) -> None:
        """Drop the pid (file and state entry), keeping the ports for the next start."""
        self.pid_path.unlink(missing_ok=True)
        state = self._read_state()
        if state.get("pid") is not None:
            state["pid"] = None
            self.state_path.write_text(json.dumps(state, indent=1) + "\n")
