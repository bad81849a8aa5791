"""What a projection is: a pure fold of events into states, with no I/O.

A projection says which entity an event belongs to (`key`), how an event changes
that entity's state (`apply`), how a state is stored (`encode_state` /
`decode_state`) and which index entries a state has (`index_keys`). The
`Projector` owns Kafka, RocksDB, batching and offsets, so a projection can be
unit-tested with a list of events and nothing else.

Events reach `apply` as `EventRecord`s, the wire form (ids as text, times as
microseconds, JSON fields as text): decoding straight into that form is several
times faster than building models, and the projector's hot path is the decode.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from behest.errors import InvalidQueryError
from behest.events import EventRecord, parse_run_id

S = TypeVar("S")


@runtime_checkable
class Projection(Protocol[S]):
    """A pure fold `(state | None, event) -> state`, per entity key."""

    name: str
    """Names the projection's consumer group and its state folder; never reuse one."""

    run_keyed: bool
    """True when the entity is the run itself (`key` is the 16-byte run id): the projector
    then also stores the run's events, snapshots every K events and deletes everything of
    the run on a tombstone. False for projections across runs (e.g. per tool): their
    states hold only aggregates, so a tombstone cannot take a run back out of them. State
    is kept per partition, so such an entity has one share per partition; give the class
    a `combine(a, b) -> S` that adds two shares up, and readers add them (`combine`)."""

    # Optional, read with getattr (a protocol member would make every existing projection
    # fail isinstance checks): `version: int = 1`. Bump it when `apply` or the stored
    # form changes: `behest project` then builds the new version beside the served one
    # and switches readers to it once it has caught up (blue/green).
    # `apply_many(state | None, events) -> state | None`: `apply` over several events, in
    # order (None for no events and no state); it may fold them all on one copy of the
    # state (leaving `state` as it was), which the projector's in-order path saves on. A
    # subclass that overrides `apply` but not `apply_many` is folded with its `apply`.

    def key(self, event: EventRecord) -> bytes | None:
        """The entity the event folds into, or None to skip the event. A run-keyed
        projection returns `run_id.bytes`; the projector then uses the run key it has."""
        ...

    def apply(self, state: S | None, event: EventRecord) -> S:
        """The state after `event`; must not mutate `state` nor do I/O."""
        ...

    def encode_state(self, state: S) -> bytes:
        """Bytes stored in RocksDB for a state."""
        ...

    def decode_state(self, data: bytes) -> S:
        """The state back from its stored bytes."""
        ...

    def index_keys(self, state: S) -> Iterable[bytes]:
        """Index entries that list this state (e.g. by session, by status)."""
        ...


def fold(
    projection: Projection[S], events: Iterable[EventRecord], state: S | None = None
) -> S | None:
    """Fold events, in order, into one state: the reference a projector's result equals."""
    for event in events:
        state = projection.apply(state, event)
    return state


def combine(projection: Projection[S], shares: Sequence[S]) -> S:
    """One entity's state from its shares in several partitions (projections not keyed by
    run fold each partition apart): the projection's own `combine(a, b)`, left to right."""
    if not shares:
        raise ValueError("no shares to combine")
    add: Callable[[S, S], S] | None = getattr(projection, "combine", None)
    if add is None:
        if len(shares) == 1:
            return shares[0]
        raise TypeError(
            f"{type(projection).__name__} is folded per partition and this entity has "
            f"{len(shares)} shares: give the class a `combine(a, b)` that adds two up"
        )
    state = shares[0]
    for share in shares[1:]:
        state = add(state, share)
    return state


def combiner(projection: Projection[Any]) -> Callable[[list[bytes]], bytes] | None:
    """Stored shares of an entity to its stored whole (None when there is nothing to add
    up: a run-keyed projection, or one without `combine`)."""
    if projection.run_keyed or getattr(projection, "combine", None) is None:
        return None

    def add_up(shares: list[bytes]) -> bytes:
        decode = projection.decode_state
        return projection.encode_state(combine(projection, [decode(s) for s in shares]))

    return add_up


def fold_by_key(projection: Projection[S], events: Iterable[EventRecord]) -> dict[bytes, S]:
    """Fold events into one state per key, as the projector does without Kafka or RocksDB."""
    states: dict[bytes, S] = {}
    for event in events:
        key = projection.key(event)
        if key is not None:
            states[key] = projection.apply(states.get(key), event)
    return states


# --- optional hooks, for reading a projection's states by name (HTTP, CLI) ----------------------
#
# A projection may define any of these methods; without them, readers use the defaults:
#   parse_key(text: str) -> bytes      an entity key from its text (a URL path segment)
#   format_key(key: bytes) -> str      the text of an entity key
#   index_entity(index_key: bytes) -> bytes   the entity an index key lists
#   state_json(data: bytes) -> bytes   a stored state as JSON (default: stored as JSON already)


def parse_key(projection: Projection[Any], text: str) -> bytes:
    """The entity key `text` names: a run id's 16 bytes for run-keyed projections, the
    UTF-8 text otherwise, unless the projection defines `parse_key`."""
    custom = getattr(projection, "parse_key", None)
    if custom is not None:
        key: bytes = custom(text)
        return key
    if projection.run_keyed:
        return parse_run_id(text).bytes
    return text.encode()


def format_key(projection: Projection[Any], key: bytes) -> str:
    """The text of an entity key (the inverse of `parse_key`)."""
    custom = getattr(projection, "format_key", None)
    if custom is not None:
        text: str = custom(key)
        return text
    if projection.run_keyed:
        return str(uuid.UUID(bytes=key[:16]))
    return key.decode(errors="backslashreplace")


def index_entity(projection: Projection[Any]) -> Callable[[bytes], bytes]:
    """How to find the entity key an index entry lists: by default, a run-keyed
    projection's index keys end with the run's 16 bytes; others must define `index_entity`."""
    custom: Callable[[bytes], bytes] | None = getattr(projection, "index_entity", None)
    if custom is not None:
        return custom
    if projection.run_keyed:
        return _last_16
    raise InvalidQueryError(
        f"projection {projection.name!r} does not say which state an index key lists: "
        "define index_entity(index_key) -> bytes on it to scan its index"
    )


def _last_16(index_key: bytes) -> bytes:
    return index_key[-16:]
