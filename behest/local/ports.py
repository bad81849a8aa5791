"""Ports on loopback: a free one, whether one is taken, and whether a Kafka answers there
(without a client's log noise while nothing listens yet)."""

from __future__ import annotations

import socket

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from behest.local.kraft import HOST

__all__ = ["answers", "broker_ids", "free_port", "port_in_use"]


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if binding `host:port` fails, as it would for the broker.

    SO_REUSEADDR matches what the JVM does, so TIME_WAIT leftovers of a stopped broker do
    not count as taken, while any listening socket (on this address or 0.0.0.0) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def answers(bootstrap: str) -> bool:
    """True once the broker serves metadata (and lists itself) at `bootstrap`."""
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            pass
    except OSError:
        return False  # not listening yet: skip the client and its log noise
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=2.0)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def broker_ids(bootstrap: str, timeout: float = 2.0) -> set[int]:
    """Node ids of the brokers the cluster at `bootstrap` lists (empty if none answers)."""
    listening = []
    for address in bootstrap.split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                listening.append(address)
        except OSError:
            continue
    if not listening:
        return set()  # nothing listens yet: skip the client and its log noise
    admin = AdminClient({"bootstrap.servers": ",".join(listening), "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return set()
    return set(metadata.brokers)
