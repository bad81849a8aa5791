"""Which partitions this node serves as current: owned per the group, and caught up."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from behest.cluster.membership import ClusterView, Membership

__all__ = ["Ownership"]

log = logging.getLogger(__name__)


class Ownership:
    """Which partitions this node serves as current, from the group's view and its own store.

    Owning is not enough: after a takeover the store first folds what it missed, so a
    partition is served only once its folded offset reached the log's end offset as it was
    *after this node's worker was assigned it* (the takeover mark). The previous owner gave
    the partition up before that assignment (the group revokes before it assigns), so
    everything it folded and answered is below the mark. `folded` gives the workers' next
    offsets per partition; `seen` (optional) what the HTTP API's reader sees once caught up
    with them (a partition is served only when that reader has the mark too); `assigned`
    (optional) what this node's own workers hold right now, which a revocation changes
    before the group's description does.
    """

    def __init__(
        self,
        url: str,
        membership: Membership,
        folded: Callable[[], Mapping[int, int]],
        assigned: Callable[[], frozenset[int]] | None = None,
        seen: Callable[[], Mapping[int, int]] | None = None,
    ) -> None:
        self.url = url
        self.membership = membership
        self.folded = folded
        self.assigned = assigned
        self.seen = seen
        self._marks: dict[int, int] = {}
        self._current: set[int] = set()
        self._epochs: dict[int, int] = {}
        """Partition -> count of losses and gains: a mark read across one is dropped."""
        self._lock = threading.Lock()

    def update(self, view: ClusterView) -> None:
        """Note partitions gained (their takeover mark) and lost; called on each new view,
        so a mark that could not be read (a broker down) is tried again."""
        owned = view.owned_by(self.url)
        held = None if self.assigned is None else self.assigned()
        with self._lock:
            for partition in list(self._marks):
                if partition not in owned:
                    self._drop(partition)
            gained = {
                p: self._epochs.get(p, 0)
                for p in owned
                if p not in self._marks and (held is None or p in held)
            }
        if not gained:
            return
        marks = self.membership.high_watermarks(gained)
        with self._lock:
            for partition, mark in marks.items():
                if self._epochs.get(partition, 0) == gained[partition]:
                    self._marks[partition] = mark
                    log.info("partition %d: owned; served once folded up to %d", partition, mark)

    def forget(self, partitions: Iterable[int]) -> None:
        """This node's workers lost or gained `partitions` (perhaps before the group's
        description says so): each catches up again to a mark read after its assignment
        before it is served."""
        with self._lock:
            for partition in partitions:
                self._drop(partition)

    def _drop(self, partition: int) -> None:
        if partition in self._current:
            log.info("partition %d: no longer served", partition)
        self._marks.pop(partition, None)
        self._current.discard(partition)
        self._epochs[partition] = self._epochs.get(partition, 0) + 1

    def owns(self, partition: int) -> bool:
        if self.membership.view.owner(partition) != self.url:
            return False
        return self.assigned is None or partition in self.assigned()

    def serves(self, partition: int) -> bool:
        """Owned, and caught up with the takeover mark (latched until lost)."""
        if not self.owns(partition):
            return False
        if partition in self._current:
            return True
        with self._lock:
            mark = self._marks.get(partition)
            epoch = self._epochs.get(partition, 0)
        if mark is None or self.folded().get(partition, 0) < mark:
            return False
        if self.seen is not None and self.seen().get(partition, 0) < mark:
            return False  # the workers have it; this node's reader does not see it yet
        with self._lock:
            if self._epochs.get(partition, 0) != epoch:
                return False
            self._current.add(partition)
        log.info("partition %d: served (folded up to its mark %d)", partition, mark)
        return True

    def serving(self) -> frozenset[int]:
        return frozenset(p for p in range(self.membership.view.partitions) if self.serves(p))
