"""The tailer: the one background reader of a store that every watcher of it shares.

One `Tailer` per open store (so one per server) does all the watching. On a short tick
it catches up with the projector the partition stores of the watched runs only (a
catch-up replays what a writer wrote, holding the GIL: other partitions' traffic would
only delay them) and, only if the stored offsets moved, reads the heads of the watched
runs in one multi-get; a run that moved has its new events read and folded once, and the
same messages go to every watcher of that run. A watcher costs an inbox, not a poll loop:
500 watchers of one run cost one read per tick.

The runs feed (`watch_runs`, for list views) reports, every `FEED_INTERVAL`, the new state
of every run that changed and every run deleted (`behest.read.feed`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from behest.codec import decode_record, to_event
from behest.events import AgentEvent, format_time
from behest.fold.sequences import RunHead
from behest.fold.storeset import StoreSet
from behest.projections.run_state import TERMINAL
from behest.read.feed import RunDeleted, RunsFeed
from behest.read.inbox import FeedInbox, Inbox, wake
from behest.read.reader import Absent, ProjectionReader

__all__ = [
    "DEFAULT_INTERVAL",
    "FEED_INTERVAL",
    "Change",
    "Tailer",
    "event_json",
    "header",
    "step",
    "tailer_of",
]

DEFAULT_INTERVAL: Final = 0.005
"""Seconds between the tailer's looks at the store while anyone watches."""

FEED_INTERVAL: Final = 0.1
"""Seconds between the runs feed's comparisons (a list view needs no more)."""

_PAGE: Final = 256
_FAILURE_LOG_INTERVAL: Final = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a watched run as sent: the event (None for an opening state) and the
    state after it, both as the contract's JSON. `deleted`: the run was tombstoned."""

    sequence: int
    state: bytes
    terminal: bool
    event: AgentEvent | None = None
    event_json: bytes | None = None
    deleted: bool = False
    late: bool = False
    """A late event: `sequence` is below sequences already sent; `state` is the state at
    `at`, the highest sequence sent, corrected (the run was re-folded with the event)."""
    at: int = -1


def event_json(event: AgentEvent) -> bytes:
    """An event as `GET /runs/{run_id}/events` and the watch stream show it."""
    data = event.model_dump(mode="json")
    data["timestamp"] = format_time(event.timestamp)
    return orjson.dumps(data)


def header(state: bytes) -> tuple[int, bool]:
    head = orjson.loads(state)
    return int(head["sequence"]), head["status"] in TERMINAL


_TAILERS: weakref.WeakKeyDictionary[ProjectionReader[Any], Tailer] = weakref.WeakKeyDictionary()
_TAILERS_LOCK = threading.Lock()


def tailer_of(reader: ProjectionReader[Any]) -> Tailer:
    """The tailer every watcher of `reader`'s store shares; made on first use, stopped
    when the reader closes."""
    with _TAILERS_LOCK:
        tailer = _TAILERS.get(reader)
        if tailer is None:
            tailer = _TAILERS[reader] = Tailer(reader)
            reader.on_close(tailer.close)
        return tailer


class _Channel:
    """The tailer's view of one watched run: what it last handed out, to whom, and the
    run's head when it did (the sequences still missing then: a late event fills one)."""

    def __init__(self, run: bytes, state: bytes | None, head: RunHead | None) -> None:
        self.run = run
        self.state = state
        self.sequence = -1 if state is None else header(state)[0]
        self.head = head
        self.inboxes: set[Inbox] = set()


class Tailer:
    """The one background reader of a store that every watcher of it shares."""

    def __init__(
        self, reader: ProjectionReader[Any], *, interval: float = DEFAULT_INTERVAL
    ) -> None:
        self.reader = reader
        self.interval = interval
        self._lock = threading.Lock()
        self._channels: dict[bytes, _Channel] = {}
        self._feeds: set[FeedInbox] = set()
        self._feed: RunsFeed | None = None
        self._feed_lock = threading.Lock()
        self._retired: list[RunsFeed] = []
        self._fed_at = 0.0
        self._offsets: dict[int, int] | None = None
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failed_at = -float("inf")

    # --- registration (any thread) ------------------------------------------------------

    def subscribe(self, run: bytes, inbox: Inbox) -> tuple[bytes | None, RunHead | None]:
        """Register `inbox` for `run`; the state (JSON) after the last sequence it will not
        be sent (None if the run has no event yet) and the run's head then: of the
        sequences below, only the late ones that fill its gaps will be sent. A terminal
        run is not registered."""
        with self._lock:
            channel = self._channels.get(run)
            if channel is None:
                state, head = self._read(run)
                if state is not None and header(state)[1]:
                    return state, head
                channel = self._channels[run] = _Channel(run, state, head)
            channel.inboxes.add(inbox)
            state, head = channel.state, channel.head
        self._start()
        return state, head

    def _read(self, run: bytes) -> tuple[bytes | None, RunHead | None]:
        """A run's state and its head, read at the same point (any fold changes the head:
        an unchanged head around the state read means they agree)."""
        heads = self.reader.store.get_heads
        head = heads([run])[0]
        while True:
            state = self.reader.get(run)
            again = heads([run])[0]
            if again == head:
                return state, head
            head = again

    def unsubscribe(self, run: bytes, inbox: Inbox) -> None:
        with self._lock:
            channel = self._channels.get(run)
            if channel is not None:
                channel.inboxes.discard(inbox)
                if not channel.inboxes:
                    del self._channels[run]

    def subscribe_feed(self, inbox: FeedInbox) -> None:
        with self._feed_lock, self._lock:
            if self._feed is None:
                self.reader.refresh(force=True)
                self._feed = RunsFeed(self.reader)  # from here on, no change is missed
            self._feeds.add(inbox)
        self._start()

    def unsubscribe_feed(self, inbox: FeedInbox) -> None:
        with self._lock:
            self._feeds.discard(inbox)
            if not self._feeds and self._feed is not None:
                # closed by the tailer's thread: closing a consumer may block for a while
                self._retired.append(self._feed)
                self._feed = None
        self._wanted.set()

    @property
    def watchers(self) -> int:
        """How many watchers are registered (runs and feeds)."""
        with self._lock:
            return len(self._feeds) + sum(len(c.inboxes) for c in self._channels.values())

    # --- the thread -----------------------------------------------------------------------

    def _start(self) -> None:
        self._wanted.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping:
                    self._thread = threading.Thread(
                        target=self._run, name="behest-watch-tailer", daemon=True
                    )
                    self._thread.start()

    def close(self) -> None:
        """Stop the thread (watchers still registered get nothing more)."""
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if self._feed is not None:
                self._retired.append(self._feed)
                self._feed = None
        self._close_retired()

    def _close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for feed in retired:
            feed.close()

    def _run(self) -> None:
        while not self._stopping:
            self._close_retired()
            with self._lock:
                idle = not self._channels and not self._feeds
                if idle:
                    self._wanted.clear()
                    self._offsets = None
            if idle:
                self._wanted.wait()
                continue
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # the store failed or was closed: try again next tick
                if self._stopping:
                    return
                if started - self._failed_at > _FAILURE_LOG_INTERVAL:
                    self._failed_at = started
                    log.exception("watching %s: a look at the store failed", self.reader.name)
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def tick(self) -> None:
        """One look at the store: hand out whatever was folded since the last look."""
        now = time.monotonic()
        with self._lock:
            channels = list(self._channels.values())
            has_feeds = bool(self._feeds)
        feeding = has_feeds and now - self._fed_at >= FEED_INTERVAL
        store = self.reader.store
        if isinstance(store, StoreSet) and not feeding:
            # Only the watched runs' partitions: a catch-up replays what their writers
            # wrote, so every other partition's traffic would only delay these.
            store.catch_up_runs([c.run for c in channels])
        else:
            self.reader.refresh(force=True)
        offsets = store.stored_offsets(self.reader.topic)
        if offsets == self._offsets and not feeding:  # a feed reads the log: it looks anyway
            return
        self._offsets = offsets
        woken: list[Inbox] = []
        if channels:
            woken += self._tick_runs(channels)
        if feeding:
            self._fed_at = now
            woken += self._tick_feed()
        wake(woken)

    def _tick_runs(self, channels: list[_Channel]) -> list[Inbox]:
        store = self.reader.store
        heads = store.get_heads([c.run for c in channels])
        woken: list[Inbox] = []
        for channel, head in zip(channels, heads, strict=True):
            if head is None:
                if channel.sequence < 0:
                    continue
                changes = [Change(channel.sequence, b"null", True, deleted=True)]
                channel.state, channel.sequence = None, -1  # a run made again starts afresh
                channel.head = None
            elif head == channel.head:
                continue
            else:
                changes = self._late(channel, head)
                if head.last > channel.sequence:
                    changes += self._fold(channel, head.last)
                channel.head = head
                if not changes:  # e.g. a refused event: its sequence stays missing
                    continue
            with self._lock:
                if changes[-1].terminal and self._channels.get(channel.run) is channel:
                    del self._channels[channel.run]
                inboxes = list(channel.inboxes)
            for inbox in inboxes:
                inbox.put(changes)
                if inbox.dropped:
                    self.unsubscribe(channel.run, inbox)
            woken += inboxes
        return woken

    def _late(self, channel: _Channel, head: RunHead) -> list[Change]:
        """The late events stored since the channel's last look, in the gaps it knew of,
        each with the state at the channel's position as re-folded with them."""
        known = channel.head
        if known is None or known.missing == head.missing or channel.state is None:
            return []
        store = self.reader.store
        found = [
            (sequence, data)
            for first, last in known.missing
            if first <= channel.sequence
            for sequence, data in store.iter_events(channel.run, first, min(last, channel.sequence))
        ]
        if not found:
            return []
        at = channel.sequence
        state = self.reader.get_at(channel.run, None, at)
        if isinstance(state, Absent):
            return []
        channel.state = state
        terminal = header(state)[1]
        changes = []
        for sequence, data in found:
            event = to_event(decode_record(data))
            changes.append(
                Change(sequence, state, terminal, event, event_json(event), late=True, at=at)
            )
        return changes

    def _fold(self, channel: _Channel, last: int) -> list[Change]:
        return list(self._folding(channel, last))

    def _folding(self, channel: _Channel, last: int) -> Iterator[Change]:
        projection = self.reader.projection
        folded = None if channel.state is None else projection.decode_state(channel.state)
        for sequence, data in self.reader.store.iter_events(
            channel.run, channel.sequence + 1, last
        ):
            folded, change = step(projection, folded, sequence, data)
            channel.state, channel.sequence = change.state, sequence
            yield change
            if change.terminal:
                return

    def _tick_feed(self) -> list[Inbox]:
        with self._feed_lock:
            feed = self._feed
            found = [] if feed is None else feed.changes()
            with self._lock:
                feeds = list(self._feeds)
        if not found:
            return []
        parsed = [(None if isinstance(c, RunDeleted) else orjson.loads(c), c) for c in found]
        woken: list[Inbox] = []
        for inbox in feeds:
            items = [change for head, change in parsed if head is None or inbox.wants(head)]
            if items:
                inbox.put(items)
                woken.append(inbox)
        return woken


def step(projection: Any, folded: Any, sequence: int, data: bytes) -> tuple[Any, Change]:
    """Fold one stored event; the new folding state and the change to hand out."""
    record = decode_record(data)
    folded = projection.apply(folded, record)
    event = to_event(record)
    return folded, Change(
        sequence=sequence,
        state=projection.encode_state(folded),
        terminal=folded["status"] in TERMINAL,
        event=event,
        event_json=event_json(event),
    )
