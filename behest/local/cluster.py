"""A local Kafka cluster of several KRaft nodes on 127.0.0.1, so failover can be tried here.

Each node is a `LocalBroker` (broker and controller in one JVM) in its own folder of the
cluster's data dir, with its own ports; the controllers form one static quorum, so the
cluster keeps working while a majority of nodes is up (two of three):

    <data dir>/cluster.json    node count, cluster id, every node's ports (stable across restarts)
    <data dir>/node-<id>/      that node's LocalBroker data dir (config, logs, pid)

Topics get replication factor 3 and `min.insync.replicas=2` by default (the brokers'
defaults, which `behest topics create` also sets), so an acknowledged (`acks=all`) write
survives the loss of any one node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from behest.config import project_home
from behest.errors import BrokerError
from behest.local.broker import START_TIMEOUT, LocalBroker
from behest.local.kraft import HOST, new_cluster_id
from behest.local.ports import broker_ids, free_port, port_in_use
from behest.local.runtime import folder_lock

__all__ = [
    "CLUSTER_HEAP",
    "DEFAULT_CLUSTER_PORT",
    "ClusterStatus",
    "LocalCluster",
    "default_cluster_dir",
    "is_cluster_dir",
]

DEFAULT_CLUSTER_PORT: Final = 9093
"""The first node's client port when none is given (the next nodes take the next ports)."""
CLUSTER_HEAP: Final = "384m"
"""Heap per node: three JVMs share the machine with the tests."""
_MANIFEST: Final = "cluster.json"


def default_cluster_dir() -> Path:
    """The data dir `behest broker start --nodes N` uses when none is given."""
    return project_home() / "cluster"


def is_cluster_dir(data_dir: Path) -> bool:
    """Whether a data dir holds a local cluster (rather than a single broker)."""
    return (data_dir / _MANIFEST).is_file()


@dataclass(frozen=True)
class ClusterStatus:
    """Which nodes of a cluster run, and the bootstrap list of those that do."""

    data_dir: Path
    nodes: dict[int, int | None]
    """Node id -> pid of its running broker (None: not running)."""
    ports: dict[int, int]
    already_running: bool = False

    @property
    def running(self) -> bool:
        return any(pid is not None for pid in self.nodes.values())

    @property
    def bootstrap(self) -> str | None:
        """Every node's `host:port` (a client needs any one that is up)."""
        return ",".join(f"{HOST}:{self.ports[n]}" for n in sorted(self.ports)) or None


class LocalCluster:
    """`nodes` local Kafka nodes in one KRaft quorum: start, stop, kill and restart nodes."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        nodes: int = 3,
        heap: str = CLUSTER_HEAP,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve() if data_dir else default_cluster_dir().resolve()
        manifest = self._read_manifest()
        self.size = int(manifest.get("nodes", nodes))
        if self.size < 1:
            raise BrokerError(f"a cluster needs at least one node, not {self.size}")
        self.heap = heap
        self.progress = progress

    def __repr__(self) -> str:
        return f"LocalCluster({str(self.data_dir)!r}, nodes={self.size})"

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self.size + 1))

    def node(self, node_id: int) -> LocalBroker:
        """The broker of one node (its ports, quorum and cluster id from the manifest)."""
        manifest = self._read_manifest()
        if node_id not in self.node_ids:
            raise BrokerError(f"{self} has nodes {self.node_ids}, not {node_id}")
        return LocalBroker(
            self.data_dir / f"node-{node_id}",
            node_id=node_id,
            voters=manifest.get("voters"),
            cluster_id=manifest.get("cluster_id"),
            replication=min(3, self.size),
            heap=self.heap,
            progress=self.progress,
        )

    # --- the whole cluster --------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        ports = {int(k): v for k, v in self._read_manifest().get("ports", {}).items()}
        return ClusterStatus(
            data_dir=self.data_dir,
            nodes={n: self.node(n).status().pid for n in self.node_ids} if ports else {},
            ports=ports,
        )

    def start(self, port: int | None = None, *, timeout: float = START_TIMEOUT) -> ClusterStatus:
        """Start every node that is not running (0 or None as `port`: the ports of the last
        run, else from `DEFAULT_CLUSTER_PORT` on; 0 picks free ones) and wait until all of
        them are in the cluster's metadata. Idempotent."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.data_dir / ".lock"):
            before = self.status()
            if before.ports and all(pid is not None for pid in before.nodes.values()):
                self._wait_for_nodes(self.node_ids, timeout)
                return ClusterStatus(
                    self.data_dir, before.nodes, before.ports, already_running=True
                )
            manifest = self._read_manifest() or self._plan(port)
            self._write_manifest(manifest)
            stopped = [n for n in self.node_ids if before.nodes.get(n) is None]
            with ThreadPoolExecutor(len(stopped)) as pool:  # format and launch side by side
                list(pool.map(self._launch, stopped))
            self._wait_for_nodes(self.node_ids, timeout)
            return self.status()

    def stop(self) -> bool:
        """Stop every node (SIGTERM, side by side); False if none was running."""
        if not is_cluster_dir(self.data_dir):
            return False
        with ThreadPoolExecutor(self.size) as pool:
            stopped = list(pool.map(lambda n: self.node(n).stop(), self.node_ids))
        return any(stopped)

    # --- single nodes (fault tests) -----------------------------------------------------------

    def start_node(self, node_id: int, *, timeout: float = START_TIMEOUT) -> None:
        """(Re)start one node and wait until the cluster lists it again."""
        self._launch(node_id)
        self._wait_for_nodes([node_id], timeout)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would (no clean shutdown)."""
        self.node(node_id).kill()

    def stop_node(self, node_id: int) -> bool:
        """Stop one node cleanly."""
        return self.node(node_id).stop()

    # --- steps --------------------------------------------------------------------------------

    def _plan(self, port: int | None) -> dict[str, Any]:
        """Ports and quorum of a new cluster."""
        taken: set[int] = set()

        def pick(wanted: int) -> int:
            chosen = wanted or free_port()
            while chosen in taken:
                chosen = free_port()
            if wanted and port_in_use(chosen):
                raise BrokerError(
                    f"port {chosen} on {HOST} is already in use: pick other ports with "
                    "--port (the nodes take that port and the ones after it), or 0 for free ones"
                )
            taken.add(chosen)
            return chosen

        base = DEFAULT_CLUSTER_PORT if port is None else port
        ports = {n: pick(base + n - 1 if base else 0) for n in self.node_ids}
        controllers = {n: pick(0) for n in self.node_ids}
        voters = ",".join(f"{n}@{HOST}:{controllers[n]}" for n in self.node_ids)
        return {
            "nodes": self.size,
            "cluster_id": new_cluster_id(),
            "ports": {str(n): p for n, p in ports.items()},
            "controller_ports": {str(n): p for n, p in controllers.items()},
            "voters": voters,
        }

    def _launch(self, node_id: int) -> None:
        manifest = self._read_manifest()
        self.node(node_id).launch(
            manifest["ports"][str(node_id)], manifest["controller_ports"][str(node_id)]
        )

    def _wait_for_nodes(self, node_ids: list[int], timeout: float) -> None:
        """Until the metadata of a running node lists every node in `node_ids`."""
        deadline = time.monotonic() + timeout
        ports = self._read_manifest()["ports"]
        while True:
            for n in node_ids:
                self.node(n).check_alive()
            bootstrap = ",".join(f"{HOST}:{p}" for p in ports.values())
            if set(node_ids) <= broker_ids(bootstrap):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"nodes {node_ids} of the cluster in {self.data_dir} did not all join "
                    f"within {timeout:.0f} s; see {self.data_dir}/node-*/broker.log"
                )
            time.sleep(0.25)

    def _read_manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads((self.data_dir / _MANIFEST).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        (self.data_dir / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
