"""Folding one entity's events: in order onto its state, or, for a run that received a late
event, again from its nearest snapshot before that event.

The batch engine (`behest.fold.engine`) hands each entity's new events here, sorted by
sequence for a run. When one of a run's events is below a sequence already stored, the
run's state is read back from the snapshot before it and the stored events after that
snapshot are folded again together with the new ones, in sequence order: the state, every
snapshot after that point, and so the time index and the index entries come out exactly as
if the events had arrived in order. Pure of Kafka; reads the store, writes nothing.
"""

from __future__ import annotations

import bisect
import logging
import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar

from behest.codec import decode_record
from behest.fold.projection import Projection
from behest.fold.store import StateStore

if TYPE_CHECKING:
    from behest.fold.engine import LogRecord

__all__ = [
    "EPOCH",
    "EVENT",
    "LATE",
    "RECORD",
    "RUN",
    "SEQUENCE",
    "VALUE",
    "EntityFold",
    "Folded",
    "Item",
    "Refuse",
]

log = logging.getLogger(__name__)

S = TypeVar("S")


Item: TypeAlias = "tuple[int, Any, bytes, LogRecord, bytes, int, bool]"
"""One record on its way through a batch: an event to fold, or a run's tombstone (event
None, sequence -1), read by the positions below. A plain tuple: one is made per event, and
a tuple display is the cheapest object there is (a NamedTuple's `tuple.__new__` costs ~1k
instructions more)."""
SEQUENCE: Final = 0
EVENT: Final = 1
VALUE: Final = 2  # the bytes to store
RECORD: Final = 3  # the log record, for a dead letter
RUN: Final = 4
EPOCH: Final = 5  # tombstones of its run before it in the batch
LATE: Final = 6  # below its run's head: folds into a gap

Folded: TypeAlias = "tuple[Any, list[Item], list[tuple[int, int, bytes]]]"
"""The outcome of folding some events: the state, the items folded and the snapshots due."""
Step: TypeAlias = "tuple[int, Item | None, bytes]"
"""A step of a fold: (sequence, the batch's item or None for a stored event, stored bytes)."""
Refuse: TypeAlias = "Callable[[Item, str], None]"
"""Dead-letters an item with the reason the fold could not take it."""


by_sequence: Callable[[Item], int] = operator.itemgetter(0)
"""Sort key of items in sequence order (C-level: sorting a batch calls it per item)."""
_event: Callable[[Item], Any] = operator.itemgetter(1)


def _apply_many(projection: Projection[Any]) -> Callable[[Any, Iterable[Any]], Any]:
    """The projection's `apply_many`, if it has one written with its `apply` in view (not
    one inherited by a class that overrides `apply`); else `apply`, event by event."""
    classes = type(projection).__mro__
    own = next((c for c in classes if "apply_many" in vars(c)), None)
    base = next((c for c in classes if "apply" in vars(c)), None)
    written_with = own is not None and base is not None and issubclass(own, base)
    if written_with and "apply" not in getattr(projection, "__dict__", {}):
        many: Callable[[Any, Iterable[Any]], Any] = projection.apply_many  # type: ignore[attr-defined]
        return many
    apply = projection.apply

    def one_by_one(state: Any, events: Iterable[Any]) -> Any:
        for event in events:
            state = apply(state, event)
        return state

    return one_by_one


def _snapshot_points(items: list[Item], every: int) -> list[int]:
    """Where in `items` (sorted by sequence) a snapshot is due: at each sequence that
    ends a stretch of `every` (`(sequence + 1) % every == 0`); none when `every` is 0."""
    if not every or not items:
        return []
    sequences = list(map(by_sequence, items))
    points = []
    due = sequences[0] // every * every + every - 1  # the first such sequence from there
    while due <= sequences[-1]:
        at = bisect.bisect_left(sequences, due)
        if sequences[at] == due:
            points.append(at)
            due += every
        else:  # not among them: the next one due after the sequence found instead
            due = sequences[at] // every * every + every - 1
    return points


class EntityFold(Generic[S]):
    """Folds an entity's events for the batch engine, re-folding a run around late ones."""

    def __init__(self, store: StateStore, projection: Projection[S], snapshot_every: int) -> None:
        self.store = store
        self.projection = projection
        self.snapshot_every = snapshot_every
        self._apply_many = _apply_many(projection)

    def fold(
        self,
        state: S | None,
        items: list[Item],
        repair: tuple[bytes, int] | None,
        refuse: Refuse,
    ) -> Folded:
        """Fold `items`, in their order, onto `state`.

        With `repair` = (run, its last stored sequence) and the first item below it (late),
        the fold starts instead from the run's nearest snapshot before that item and takes
        the stored events after the snapshot along, in sequence order. An event the
        projection refuses is dead-lettered and its sequence stays missing; should a
        stored event no longer fold after the late ones, those late ones are refused."""
        projection = self.projection
        apply, encode = projection.apply, projection.encode_state
        every = self.snapshot_every if projection.run_keyed else 0
        if repair is None or not items or items[0][SEQUENCE] >= repair[1]:
            fast = self._in_order(state, items, every)
            if fast is not None:
                return fast
        skipped: set[int] = set()
        while True:
            start: Any = state
            stored: list[Step] = []
            if repair is not None and items and items[0][SEQUENCE] < repair[1]:
                start, stored = self._reread(repair[0], items[0][SEQUENCE], skipped)
            steps: list[Step] = [(i[SEQUENCE], i, b"") for i in items]
            if stored:
                steps = sorted(steps + stored, key=lambda step: step[0])
            current: Any = start
            folded: list[Item] = []
            snapshots: list[tuple[int, int, bytes]] = []
            refused: list[Item] = []
            broken: tuple[int, str] | None = None
            for sequence, item, data in steps:
                try:
                    event = item[EVENT] if item is not None else decode_record(data)
                    after = apply(current, event)
                    if every and (sequence + 1) % every == 0:
                        snapshots.append((sequence, event["timestamp"], encode(after)))
                except Exception as error:  # a fold that cannot take an event must not stall us
                    reason = f"{type(error).__name__}: {error}"
                    if item is None:
                        broken = (sequence, reason)
                        break
                    refuse(item, f"cannot fold this event: {reason}")
                    refused.append(item)
                    continue
                current = after
                if item is not None:
                    folded.append(item)
            for item in refused:
                items.remove(item)
            if broken is None:
                return current, folded, snapshots
            if not self._refuse_late(items, broken, refuse):
                skipped.add(broken[0])

    def _in_order(self, state: S | None, items: list[Item], every: int) -> Folded | None:
        """The common case: the batch's events onto the stored state, nothing to re-read.
        None if the projection refused one of them (`fold`'s general loop handles it).

        A stretch at a time, up to each snapshot due, then the rest: no per-event test of
        the snapshot cadence, and a projection with `apply_many` folds a stretch on one
        copy of its state."""
        apply_many, encode = self._apply_many, self.projection.encode_state
        current: Any = state
        snapshots: list[tuple[int, int, bytes]] = []
        try:
            begin = 0
            for end in _snapshot_points(items, every):
                current = apply_many(current, map(_event, items[begin : end + 1]))
                sequence, event = items[end][SEQUENCE], items[end][EVENT]
                snapshots.append((sequence, event["timestamp"], encode(current)))
                begin = end + 1
            if begin < len(items):
                current = apply_many(current, map(_event, items[begin:] if begin else items))
        except Exception:  # folded again one by one below, refusing what fails
            return None
        return current, items, snapshots

    def _reread(self, run: bytes, first_late: int, skipped: set[int]) -> tuple[Any, list[Step]]:
        """The run's state at its nearest snapshot before `first_late`, and the stored
        events after that snapshot (to fold again around the late ones)."""
        snapshot = self.store.snapshot_at_or_before(run, first_late - 1) if first_late else None
        state = None if snapshot is None else self.projection.decode_state(snapshot[1])
        begin = 0 if snapshot is None else snapshot[0] + 1
        stored: list[Step] = [
            (sequence, None, data)
            for sequence, data in self.store.iter_events(run, begin)
            if sequence not in skipped
        ]
        return state, stored

    def _refuse_late(self, items: list[Item], broken: tuple[int, str], refuse: Refuse) -> bool:
        """A stored event no longer folds with the late events before it: refuse those
        (the run stays as it was). False if there are none (then the stored event is
        skipped: the projection itself changed)."""
        sequence, reason = broken
        culprits = [item for item in items if item[SEQUENCE] < sequence]
        if not culprits:
            log.error(
                "projection %r: the stored event at sequence %d no longer folds (%s); skipped",
                self.projection.name,
                sequence,
                reason,
            )
            return False
        for item in culprits:
            items.remove(item)
            refuse(
                item,
                f"cannot fold this late event in place: the stored event at sequence "
                f"{sequence} no longer folds after it ({reason})",
            )
        return True
