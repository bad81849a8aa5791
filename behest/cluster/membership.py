"""Who owns which partition, and at which URL: learned from the consumer group alone.

Every projector worker of a node joins the projection's consumer group with its
`client.id` set to `behest-node <advertised URL>` (`client_id_for`). The group coordinator
already knows every live member and the partitions it was assigned, and the admin API
describes both (`describe_consumer_groups`): so Kafka is the only coordination service,
and a member that stops heartbeating drops out of the description when its session times
out. `Membership` has that description asked for on a short interval (and at once when
asked, e.g. after a rebalance or a failed forward) and publishes an immutable
`ClusterView`. The asking runs in a child process (`behest.cluster.describer`), because
librdkafka may abort the process that asks when a broker fails.

Standby copies need no coordination either: the nodes that keep a warm copy of a
partition are a pure function of the live nodes (rendezvous hashing), so every node
computes the same answer, and a node's standbys stay put when another node comes or goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Final

from confluent_kafka import Consumer, KafkaException, TopicPartition

from behest.config import Settings

__all__ = [
    "CLIENT_ID_PREFIX",
    "DEFAULT_REFRESH_INTERVAL",
    "DESCRIBER",
    "SILENT_DESCRIBER",
    "ClusterView",
    "Membership",
    "client_id_for",
    "standbys_for",
    "url_of",
    "view_of",
]

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("behest.librdkafka")

CLIENT_ID_PREFIX: Final = "behest-node "
DEFAULT_REFRESH_INTERVAL: Final = 1.0
"""Seconds between two descriptions of the group: a rebalance is seen within this."""
_DESCRIBE_TIMEOUT: Final = 5.0
SILENT_DESCRIBER: Final = 20.0
"""Seconds without a line from the describer (which answers, error or not, within ~16 s)
before it is taken for hung and restarted: a view that stopped changing would route every
request of a moved partition to its old owner for good."""
DESCRIBER: Final = (sys.executable, "-m", "behest.cluster.describer")


def client_id_for(url: str) -> str:
    """The Kafka `client.id` that advertises a node's URL to the group's other members."""
    return CLIENT_ID_PREFIX + url.rstrip("/")


def url_of(client_id: str) -> str | None:
    """The advertised URL in a member's `client.id`, or None for a non-node member."""
    if not client_id.startswith(CLIENT_ID_PREFIX):
        return None
    return client_id[len(CLIENT_ID_PREFIX) :] or None


def _rank(url: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{partition}\0{url}".encode(), digest_size=8).digest()


def standbys_for(
    partition: int, nodes: Iterable[str], owner: str | None, replicas: int
) -> tuple[str, ...]:
    """The `replicas` nodes other than the owner that keep a warm copy of `partition`:
    the highest-ranked by rendezvous hashing, so they move only when one of them leaves."""
    if replicas <= 0:
        return ()
    ranked = sorted(set(nodes), key=lambda url: _rank(url, partition), reverse=True)
    return tuple(url for url in ranked if url != owner)[:replicas]


@dataclass(frozen=True)
class ClusterView:
    """One consistent picture of the group: partition owners, standbys and node URLs."""

    partitions: int
    owners: Mapping[int, str] = field(default_factory=dict)
    """Partition -> URL of the node that owns it now (absent: no live owner)."""
    standbys: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()
    """Every node URL with a live member in the group, sorted."""
    group_state: str = "unknown"
    fetched_at: float = 0.0
    """`time.monotonic()` of the description this view comes from."""

    def owner(self, partition: int) -> str | None:
        return self.owners.get(partition)

    def owned_by(self, url: str) -> frozenset[int]:
        return frozenset(p for p, owner in self.owners.items() if owner == url)

    def standbys_of(self, url: str) -> frozenset[int]:
        return frozenset(p for p, nodes in self.standbys.items() if url in nodes)

    def to_json_dict(self) -> dict[str, object]:
        return {
            "partitions": self.partitions,
            "group_state": self.group_state,
            "nodes": list(self.nodes),
            "owners": {str(p): url for p, url in sorted(self.owners.items())},
            "standbys": {str(p): list(urls) for p, urls in sorted(self.standbys.items())},
            "age_s": round(time.monotonic() - self.fetched_at, 3),
        }


def view_of(
    members: Iterable[tuple[str, Iterable[int]]],
    partitions: int,
    *,
    standby_replicas: int = 0,
    group_state: str = "unknown",
    fetched_at: float = 0.0,
) -> ClusterView:
    """The view for `(client.id, assigned partitions)` of each live member (pure)."""
    owners: dict[int, str] = {}
    nodes: set[str] = set()
    for client_id, assigned in members:
        url = url_of(client_id)
        if url is None:
            continue
        nodes.add(url)
        for partition in assigned:
            if 0 <= partition < partitions:
                owners[partition] = url
    standbys = {
        p: found
        for p in range(partitions)
        if (found := standbys_for(p, nodes, owners.get(p), standby_replicas))
    }
    return ClusterView(
        partitions=partitions,
        owners=owners,
        standbys=standbys,
        nodes=tuple(sorted(nodes)),
        group_state=group_state,
        fetched_at=fetched_at,
    )


class Membership:
    """Keeps a fresh `ClusterView` of a projection's consumer group, on a thread.

    `view` is always the latest complete view; `refresh()` asks for a new one now (after a
    failed forward, say) and returns once it is in. `on_view` is called with each new view
    (on the membership's thread, so it may take a moment: the next view waits for it).
    `describer` is the child's command line; a child silent for `silent_after` seconds is
    killed and started again.
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        *,
        standby_replicas: int = 0,
        interval: float = DEFAULT_REFRESH_INTERVAL,
        on_view: Callable[[ClusterView], None] | None = None,
        describer: Sequence[str] = DESCRIBER,
        silent_after: float = SILENT_DESCRIBER,
    ) -> None:
        self.settings = settings
        self.describer = tuple(describer)
        self.silent_after = silent_after
        self.group_id = group_id
        self.standby_replicas = standby_replicas
        self.interval = interval
        self.on_view = on_view
        self._consumer: Consumer | None = None
        self._view = ClusterView(partitions=0)
        self._child: subprocess.Popen[str] | None = None
        self._child_lock = threading.Lock()
        self._stop = threading.Event()
        self._fresh = threading.Condition()
        self._generation = 0
        self._heard = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="behest-membership", daemon=True)
        self._watchdog = threading.Thread(
            target=self._watch_child, name="behest-membership-watchdog", daemon=True
        )

    @property
    def view(self) -> ClusterView:
        return self._view

    def start(self) -> Membership:
        self._thread.start()
        self._watchdog.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with self._child_lock:
            child, self._child = self._child, None
        if child is not None:
            with contextlib.suppress(OSError, ValueError):
                if child.stdin is not None:
                    child.stdin.close()  # end of input: the child returns
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for thread in (self._thread, self._watchdog):
            if thread.is_alive():
                thread.join(10)
        if self._consumer is not None:
            self._consumer.close()

    def __enter__(self) -> Membership:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self, timeout: float = _DESCRIBE_TIMEOUT) -> ClusterView:
        """Describe the group now; the new view (or the last one, if Kafka is slow)."""
        with self._fresh:
            wanted = self._generation + 1
            self.refresh_soon()
            self._fresh.wait_for(lambda: self._generation >= wanted or self._stop.is_set(), timeout)
        return self._view

    def refresh_soon(self) -> None:
        """Describe the group again now, without waiting for it (e.g. a rebalance was seen)."""
        with self._child_lock:
            if self._child is not None and self._child.stdin is not None:
                with contextlib.suppress(OSError, ValueError):  # it is restarting
                    self._child.stdin.write("\n")
                    self._child.stdin.flush()

    def high_watermarks(self, partitions: Iterable[int]) -> dict[int, int]:
        """The topic's current end offsets for `partitions` (for catch-up checks)."""
        consumer = self._watermark_consumer()
        marks: dict[int, int] = {}
        try:  # a consumer that reads nothing forgets the topic's metadata after a broker
            consumer.list_topics(topic=self.settings.topic, timeout=_DESCRIBE_TIMEOUT)
        except KafkaException as error:  # failure: ask it of the topic again, now
            log.warning("no metadata for %s: %s", self.settings.topic, error)
            return marks
        for partition in partitions:
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.settings.topic, partition), timeout=_DESCRIBE_TIMEOUT
                )
            except KafkaException as error:
                log.warning("no watermark for partition %d: %s", partition, error)
                continue
            marks[partition] = high
        return marks

    # --- the thread ---------------------------------------------------------------------------

    def _watermark_consumer(self) -> Consumer:
        """A consumer that never subscribes: it only asks for end offsets."""
        if self._consumer is None:
            self._consumer = Consumer(
                self.settings.librdkafka(
                    **{
                        "group.id": f"{self.group_id}.watermarks",
                        "enable.auto.commit": False,
                        "logger": _librdkafka_log,
                    }
                )
            )
        return self._consumer

    def _loop(self) -> None:
        """Run the describer child, turn its lines into views; restart it if it dies."""
        while not self._stop.is_set():
            child, lines = self._spawn()
            for line in lines:
                self._take(line)
                if self._stop.is_set():
                    break
            code = child.wait()
            for pipe in (child.stdin, child.stdout):
                with contextlib.suppress(OSError, ValueError):  # a broken pipe to a dead child
                    if pipe is not None:
                        pipe.close()
            if not self._stop.is_set():
                log.warning("the group describer exited (%s): restarting it", code)
                self._stop.wait(0.5)

    def _watch_child(self) -> None:
        """Kill a describer that went silent; `_loop` starts a new one."""
        while not self._stop.wait(1.0):
            silent = time.monotonic() - self._heard
            with self._child_lock:
                child = self._child
            if child is not None and child.poll() is None and silent > self.silent_after:
                log.warning("the group describer said nothing for %.0f s: restarting it", silent)
                with contextlib.suppress(OSError):
                    child.kill()
                self._heard = time.monotonic()

    def _spawn(self) -> tuple[subprocess.Popen[str], IO[str]]:
        request = {
            "config": {k: v for k, v in self.settings.librdkafka().items() if not callable(v)},
            "topic": self.settings.topic,
            "group": self.group_id,
            "interval": self.interval,
        }
        child = subprocess.Popen(  # noqa: S603 - our own module, or a test's stand-in
            self.describer,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        stdin, stdout = child.stdin, child.stdout
        if stdin is None or stdout is None:  # pragma: no cover - both are pipes
            raise RuntimeError("the describer has no pipes")
        with self._child_lock:
            self._child = child
            self._heard = time.monotonic()
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
        return child, stdout

    def _take(self, line: str) -> None:
        """One description from the child: a new view (or, on an error, the last one)."""
        self._heard = time.monotonic()
        answer = json.loads(line)
        if "error" in answer:
            log.warning("cannot describe consumer group %s: %s", self.group_id, answer["error"])
        else:
            view = view_of(
                [(client_id, partitions) for client_id, partitions in answer["members"]],
                answer["partitions"],
                standby_replicas=self.standby_replicas,
                group_state=answer["state"],
                fetched_at=time.monotonic(),
            )
            self._view = view
            if self.on_view is not None:
                self.on_view(view)
        with self._fresh:
            self._generation += 1
            self._fresh.notify_all()
