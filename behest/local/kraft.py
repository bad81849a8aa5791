"""The files of a local KRaft node (broker and controller in one process) on loopback:
its `server.properties`, its quiet log4j2 configuration, and a new cluster id, rendered
without a JVM."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

__all__ = ["HOST", "new_cluster_id", "render_log4j2_properties", "render_server_properties"]

HOST = "127.0.0.1"
"""Every local node listens on loopback only."""


def new_cluster_id() -> str:
    """A random KRaft cluster id, as `kafka-storage random-uuid` makes it, without a JVM."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka avoids ids a CLI would read as a flag
            return cluster_id


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    node_id: int = 1,
    voters: str | None = None,
    replication: int = 1,
) -> str:
    """A KRaft node (broker and controller) on loopback: alone by default, or one of a
    cluster's nodes, given the quorum's `voters` (`1@host:port,2@host:port,...`).

    `replication` is the cluster's replication factor for new and internal topics;
    `min.insync.replicas` is one less (at most 2), so acknowledged writes survive the
    loss of a node. Topic auto-creation is off: behest creates its topics explicitly, so
    a missing topic is a clear error instead of a silently made one-partition topic.
    """
    min_isr = str(max(1, min(2, replication - 1)))
    rf = str(replication)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
    }
    lines = ["# Written by behest.local.broker on every start; edits are overwritten."]
    lines += [f"{key}={_escape_property(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _escape_property(value: str) -> str:
    """Java .properties escaping for the characters a path may contain."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=").replace(" ", "\\ ")


def render_log4j2_properties() -> str:
    """Warnings and errors only, plus the one line that says the server started."""
    return """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""
