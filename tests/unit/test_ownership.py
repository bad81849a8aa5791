"""When a node serves a partition as current: only past a takeover mark read after its own
worker was assigned the partition, and only once its HTTP reader sees that far."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from behest.cluster.membership import Membership, view_of
from behest.cluster.ownership import Ownership
from behest.config import Settings

URL = "http://a:1"


class _Group(Membership):
    """The group's view and end offsets, as a test sets them (no Kafka)."""

    def __init__(self) -> None:
        super().__init__(Settings(), "g")
        self.ends: dict[int, int] = {}
        self.while_reading: Callable[[], None] = lambda: None

    def owners(self, owners: dict[int, str]) -> None:
        members: dict[str, list[int]] = {}
        for partition, url in owners.items():
            members.setdefault(url, []).append(partition)
        self._view = view_of([(f"behest-node {u}", p) for u, p in members.items()], 2)

    def high_watermarks(self, partitions: Iterable[int]) -> dict[int, int]:
        self.while_reading()
        return {p: self.ends.get(p, 0) for p in partitions}


def _ownership(
    group: _Group, held: set[int], folded: dict[int, int], seen: dict[int, int]
) -> Ownership:
    return Ownership(URL, group, lambda: folded, lambda: frozenset(held), seen=lambda: seen)


def test_the_mark_is_read_once_this_nodes_worker_holds_the_partition() -> None:
    group, held, folded, seen = _Group(), set[int](), {0: 0}, {0: 0}
    ownership = _ownership(group, held, folded, seen)
    group.owners({0: URL, 1: "http://b:1"})
    group.ends[0] = 5
    ownership.update(group.view)  # the group says so, the worker has not been assigned yet
    folded[0] = seen[0] = 5
    assert not ownership.serves(0)
    held.add(0)
    group.ends[0] = 8  # the previous owner folded up to here before giving it up
    ownership.forget({0})  # the worker reports it gained the partition
    ownership.update(group.view)
    assert not ownership.serves(0)
    folded[0] = seen[0] = 8
    assert ownership.serves(0)
    assert not ownership.serves(1)


def test_a_partition_is_served_once_the_reader_sees_the_mark_too() -> None:
    group, held, folded, seen = _Group(), {0}, {0: 3}, {0: 2}
    ownership = _ownership(group, held, folded, seen)
    group.owners({0: URL})
    group.ends[0] = 3
    ownership.update(group.view)
    assert not ownership.serves(0)  # the worker folded it, the reader is behind
    seen[0] = 3
    assert ownership.serves(0)


def test_a_mark_read_across_a_loss_is_dropped() -> None:
    group, held, folded, seen = _Group(), {0}, {0: 4}, {0: 4}
    ownership = _ownership(group, held, folded, seen)
    group.owners({0: URL})
    group.ends[0] = 4
    group.while_reading = lambda: ownership.forget({0})  # lost and gained meanwhile
    ownership.update(group.view)
    assert not ownership.serves(0)
    group.while_reading = lambda: None
    group.ends[0] = 9
    ownership.update(group.view)
    assert not ownership.serves(0)
    folded[0] = seen[0] = 9
    assert ownership.serves(0)


def test_a_served_partition_lost_and_regained_catches_up_again() -> None:
    group, held, folded, seen = _Group(), {0}, {0: 2}, {0: 2}
    ownership = _ownership(group, held, folded, seen)
    group.owners({0: URL})
    group.ends[0] = 2
    ownership.update(group.view)
    assert ownership.serves(0)
    ownership.forget({0})  # revoked and assigned again between two views
    group.ends[0] = 6
    ownership.update(group.view)
    assert not ownership.serves(0)
    folded[0] = seen[0] = 6
    assert ownership.serves(0)
