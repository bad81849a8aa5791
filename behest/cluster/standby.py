"""Standby copies: a node follows other nodes' partitions, so it can answer while they fail.

Which partitions a node keeps a copy of is decided by the membership alone
(`ClusterView.standbys_of`, rendezvous hashing over the live nodes): no coordination
beyond the consumer group. The copies are folded by the same `BatchFolder` as the
projector's, from a consumer outside any group (manual assignment, nothing committed),
into a store of the node's own (`<state dir>/standby/<projection>`), resuming from its
stored offsets after a restart.

While a partition has no live owner, the router answers its runs from this copy, with
headers that say how stale it is: `X-Behest-Stale: true`, `X-Behest-Lag-Records` (the
log's end minus what the copy folded) and `X-Behest-Lag-Seconds` (since the copy last
reached the log's end).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from behest.cluster.membership import Membership
from behest.config import Settings
from behest.fold.engine import BatchFolder
from behest.fold.seeding import standby_path
from behest.fold.store import StateStore
from behest.projections.run_state import RunStateProjection
from behest.read.query import RunStateQuery

__all__ = ["Staleness", "StandbyCopies"]

log = logging.getLogger(__name__)

_BATCH: Final = 1000
_POLL: Final = 0.2

Staleness = tuple[int, float]
"""(records behind the log's end, seconds since the copy was last at the end)."""


class StandbyCopies:
    """Warm copies of the partitions this node stands by for, kept on a thread."""

    def __init__(self, settings: Settings, membership: Membership, url: str) -> None:
        self.settings = settings
        self.membership = membership
        self.url = url
        projection = RunStateProjection()
        self.store = StateStore(standby_path(settings.state_dir, projection.name))
        self.query = RunStateQuery(self.store, projection, topic=settings.topic)
        self._folder = BatchFolder(self.store, projection, topic=settings.topic)
        self._consumer = Consumer(
            settings.librdkafka(
                **{
                    "group.id": f"behest.standby.{uuid.uuid4().hex}",  # never joined
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                    "enable.partition.eof": False,
                    "logger": logging.getLogger("behest.librdkafka"),
                }
            )
        )
        self._following: frozenset[int] = frozenset()
        self._at_end: dict[int, float] = {}
        self._lag: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="behest-standby", daemon=True)

    def start(self) -> StandbyCopies:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()
        self.store.close()

    def staleness(self, partition: int) -> Staleness | None:
        """How stale this node's copy of `partition` is; None if it keeps none (yet)."""
        with self._lock:
            if partition not in self._following or partition not in self._at_end:
                return None
            return self._lag.get(partition, 0), time.monotonic() - self._at_end[partition]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
                messages = self._consumer.consume(num_messages=_BATCH, timeout=_POLL)
                records: list[Any] = [m for m in messages if m.error() is None]
                if records:
                    self._folder.process(records)  # poison is skipped here: the owner dead-letters
                self._measure()
            except KafkaException as error:  # a broker restart: keep going
                log.warning("standby copies: %s", error)
                self._stop.wait(1.0)
            if not self._following:
                self._stop.wait(_POLL)

    def _follow(self) -> None:
        """Follow exactly the partitions the view says this node stands by for."""
        view = self.membership.view
        wanted = view.standbys_of(self.url) - view.owned_by(self.url)
        if wanted == self._following:
            return
        stored = self.store.stored_offsets(self.settings.topic)
        self._consumer.assign(
            [
                TopicPartition(self.settings.topic, p, stored.get(p, OFFSET_BEGINNING))
                for p in sorted(wanted)
            ]
        )
        with self._lock:
            self._following = frozenset(wanted)
            self._at_end = {p: t for p, t in self._at_end.items() if p in wanted}
        log.info("standby copies of partitions %s", sorted(wanted))

    def _measure(self) -> None:
        """Lag of each copy from the watermarks of the last fetch."""
        stored = self.store.stored_offsets(self.settings.topic)
        now = time.monotonic()
        lag: dict[int, int] = {}
        at_end: dict[int, float] = {}
        for partition in self._following:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.settings.topic, partition), cached=True
            )
            if high < 0:
                continue
            lag[partition] = max(high - stored.get(partition, 0), 0)
            if lag[partition] == 0:
                at_end[partition] = now
        with self._lock:
            self._lag = lag
            self._at_end.update(at_end)
