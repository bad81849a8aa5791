"""Which partitions this node serves as current: owned per the group, and caught up."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from behest.cluster.membership import ClusterView, Membership

__all__ = ["Ownership"]


class Ownership:
    """Which partitions this node serves as current, from the group's view and its own store.

    Owning is not enough: after a takeover the store first folds what it missed, so a
    partition is served only once its folded offset reached the log's end offset as it was
    when this node first saw itself as owner. `folded` gives the store's next offsets per
    partition; `assigned` (optional) what this node's own workers hold right now, which
    a revocation changes before the group's description does.
    """

    def __init__(
        self,
        url: str,
        membership: Membership,
        folded: Callable[[], Mapping[int, int]],
        assigned: Callable[[], frozenset[int]] | None = None,
    ) -> None:
        self.url = url
        self.membership = membership
        self.folded = folded
        self.assigned = assigned
        self._marks: dict[int, int] = {}
        self._current: set[int] = set()

    def update(self, view: ClusterView) -> None:
        """Note partitions gained (their takeover mark) and lost; called on each new view,
        so a mark that could not be read (a broker down) is tried again."""
        owned = view.owned_by(self.url)
        for partition in list(self._marks):
            if partition not in owned:
                del self._marks[partition]
                self._current.discard(partition)
        gained = [p for p in owned if p not in self._marks]
        if gained:
            self._marks.update(self.membership.high_watermarks(gained))

    def forget(self, partitions: set[int]) -> None:
        """This node lost `partitions` (its workers say so, perhaps before the group's
        description does): should they come back, they catch up before being served."""
        for partition in partitions:
            self._marks.pop(partition, None)
            self._current.discard(partition)

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
        mark = self._marks.get(partition)
        if mark is None:
            return False
        if self.folded().get(partition, 0) >= mark:
            self._current.add(partition)
            return True
        return False

    def serving(self) -> frozenset[int]:
        return frozenset(p for p in range(self.membership.view.partitions) if self.serves(p))
