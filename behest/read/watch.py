"""Watch runs live: each run's events and the state after each, as they are folded.

    for update in query.watch(run_id):                  # or `async for`
        print(update.sequence, update.event, update.state.status)
    for update in query.watch(run_id, from_sequence=42):  # replay 42, 43, ... then live
        ...

One `Tailer` per open store (so one per server) does all the watching. On a short tick
it catches the RocksDB secondary up with the projector and, only if the stored offsets
moved, reads the heads of the watched runs in one multi-get; a run that moved has its new
events read and folded once, and the same messages go to every watcher of that run. A
watcher costs an inbox, not a poll loop: 500 watchers of one run cost one read per tick.

No gap, no duplicate: a watcher registers first, learning the last sequence P the tailer
has handed out for its run; it reads the events up to P from the store (where every event
is kept) and takes only sequences after P from its inbox. A watcher that falls behind (its
inbox over `MAX_BACKLOG`) is dropped from the fan-out and re-registers the same way, so
slowness costs it latency, never events.

The runs feed (`watch_runs`, for list views) compares, every `FEED_INTERVAL`, the heads of
the active runs, of the `FEED_RECENT` newest runs and of those it followed last time with
what it last reported: a run that changed is reported with its new state. So a run that is
neither active nor among the newest, e.g. one whose late events arrive long after it ended,
is not reported (a list view re-reads `GET /runs` when it opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from behest.codec import decode_record, to_event
from behest.events import AgentEvent, RunState, format_time
from behest.projections.run_state import INDEX_ACTIVE, INDEX_ALL, TERMINAL
from behest.read.reader import Absent, ProjectionReader
from behest.watching import RunUpdate

__all__ = [
    "DEFAULT_INTERVAL",
    "FEED_INTERVAL",
    "FEED_RECENT",
    "MAX_BACKLOG",
    "Change",
    "RunUpdate",
    "RunWatch",
    "RunsWatch",
    "Tailer",
    "event_json",
    "tailer_of",
]

DEFAULT_INTERVAL: Final = 0.02
"""Seconds between the tailer's looks at the store while anyone watches."""

MAX_BACKLOG: Final = 10_000
"""Messages a watcher may have waiting before it is sent back to read from the store."""

FEED_RECENT: Final = 1000
"""The runs feed follows the active runs and this many of the newest (by creation time)."""

FEED_INTERVAL: Final = 0.1
"""Seconds between the runs feed's comparisons (a list view needs no more)."""

_PAGE: Final = 256
_FAILURE_LOG_INTERVAL: Final = 60.0

log = logging.getLogger(__name__)
_TIME_BIAS: Final = 1 << 63


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


def event_json(event: AgentEvent) -> bytes:
    """An event as `GET /runs/{run_id}/events` and the watch stream show it."""
    data = event.model_dump(mode="json")
    data["timestamp"] = format_time(event.timestamp)
    return orjson.dumps(data)


def _header(state: bytes) -> tuple[int, bool]:
    head = orjson.loads(state)
    return int(head["sequence"]), head["status"] in TERMINAL


# --- inboxes: filled by the tailer's thread, drained by a thread or an event loop ---------


class _Inbox:
    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.dropped = False
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._ready = threading.Event()
        self.ready_async = asyncio.Event()  # set only through `loop`, by `_wake`

    def put(self, items: list[Any]) -> None:
        with self._lock:
            if self.dropped:
                return
            if len(self._items) + len(items) > MAX_BACKLOG:
                self.dropped = True
                self._items.clear()
            else:
                self._items.extend(items)
        self._ready.set()

    def take(self) -> list[Any]:
        with self._lock:
            items, self._items = self._items, []
        return items

    def wait(self, timeout: float | None) -> None:
        """Sync side: until something was put (or `timeout` seconds)."""
        self._ready.wait(timeout)
        self._ready.clear()


class _FeedInbox(_Inbox):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None,
        session_id: str | None,
        status: str | None,
        active: bool | None,
    ) -> None:
        super().__init__(loop)
        self.session_id = session_id
        self.status = status
        self.active = active

    def put(self, items: list[Any]) -> None:
        """A list view needs the latest states, not every one: over the backlog, the
        oldest waiting states make room."""
        with self._lock:
            self._items.extend(items)
            del self._items[: max(0, len(self._items) - MAX_BACKLOG)]
        self._ready.set()

    def wants(self, head: dict[str, Any]) -> bool:
        return (
            (self.session_id is None or head["session_id"] == self.session_id)
            and (self.status is None or head["status"] == self.status)
            and (self.active is None or (head["status"] not in TERMINAL) == self.active)
        )


def _wake(inboxes: list[_Inbox]) -> None:
    """Wake async inboxes through their loops, one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for inbox in inboxes:
        if inbox.loop is not None:
            by_loop.setdefault(inbox.loop, []).append(inbox.ready_async)
    for loop, events in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody to wake
            loop.call_soon_threadsafe(_set_all, events)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


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


# --- the tailer -----------------------------------------------------------------------------


class _Channel:
    """The tailer's view of one watched run: what it last handed out, to whom."""

    def __init__(self, run: bytes, state: bytes | None) -> None:
        self.run = run
        self.state = state
        self.sequence = -1 if state is None else _header(state)[0]
        self.inboxes: set[_Inbox] = set()


class Tailer:
    """The one background reader of a store that every watcher of it shares."""

    def __init__(
        self, reader: ProjectionReader[Any], *, interval: float = DEFAULT_INTERVAL
    ) -> None:
        self.reader = reader
        self.interval = interval
        self._lock = threading.Lock()
        self._channels: dict[bytes, _Channel] = {}
        self._feeds: set[_FeedInbox] = set()
        self._known: dict[bytes, int] | None = None
        self._fed_at = 0.0
        self._feed_due = False
        self._offsets: dict[int, int] | None = None
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failed_at = -float("inf")

    # --- registration (any thread) ------------------------------------------------------

    def subscribe(self, run: bytes, inbox: _Inbox) -> bytes | None:
        """Register `inbox` for `run`; the state (JSON) after the last sequence it will not
        be sent, or None if the run has no event yet. A terminal run is not registered."""
        with self._lock:
            channel = self._channels.get(run)
            if channel is None:
                state = self.reader.get(run)
                if state is not None and _header(state)[1]:
                    return state
                channel = self._channels[run] = _Channel(run, state)
            channel.inboxes.add(inbox)
            state = channel.state
        self._start()
        return state

    def unsubscribe(self, run: bytes, inbox: _Inbox) -> None:
        with self._lock:
            channel = self._channels.get(run)
            if channel is not None:
                channel.inboxes.discard(inbox)
                if not channel.inboxes:
                    del self._channels[run]

    def subscribe_feed(self, inbox: _FeedInbox) -> None:
        with self._lock:
            if self._known is None:
                self.reader.refresh()
                runs = self._followed()
                heads = self.reader.store.get_heads(runs)
                self._known = {r: h[0] for r, h in zip(runs, heads, strict=True) if h}
            self._feeds.add(inbox)
        self._start()

    def unsubscribe_feed(self, inbox: _FeedInbox) -> None:
        with self._lock:
            self._feeds.discard(inbox)
            if not self._feeds:
                self._known = None

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

    def _run(self) -> None:
        while not self._stopping:
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
        self.reader.refresh(force=True)
        offsets = self.reader.store.stored_offsets(self.reader.topic)
        now = time.monotonic()
        with self._lock:
            channels = list(self._channels.values())
            has_feeds = bool(self._feeds)
        feeding = has_feeds and now - self._fed_at >= FEED_INTERVAL
        if offsets == self._offsets and not self._feed_due:
            return
        self._offsets = offsets
        woken: list[_Inbox] = []
        if channels:
            woken += self._tick_runs(channels)
        self._feed_due = has_feeds and not feeding  # the change is the feed's at its next turn
        if feeding:
            self._fed_at = now
            woken += self._tick_feed()
        _wake(woken)

    def _tick_runs(self, channels: list[_Channel]) -> list[_Inbox]:
        store = self.reader.store
        heads = store.get_heads([c.run for c in channels])
        woken: list[_Inbox] = []
        for channel, head in zip(channels, heads, strict=True):
            if head is None:
                if channel.sequence < 0:
                    continue
                changes = [Change(channel.sequence, b"null", True, deleted=True)]
                channel.state, channel.sequence = None, -1  # a run made again starts afresh
            elif head[0] <= channel.sequence:
                continue
            else:
                changes = list(self._fold(channel, head[0]))
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

    def _fold(self, channel: _Channel, last: int) -> Iterator[Change]:
        projection = self.reader.projection
        folded = None if channel.state is None else projection.decode_state(channel.state)
        for sequence, data in self.reader.store.iter_events(
            channel.run, channel.sequence + 1, last
        ):
            folded, change = _step(projection, folded, sequence, data)
            channel.state, channel.sequence = change.state, sequence
            yield change
            if change.terminal:
                return

    def _followed(self) -> list[bytes]:
        """Runs the feed compares: the active ones and the `FEED_RECENT` newest."""
        store = self.reader.store
        runs = {key[-16:] for key in store.scan_index(INDEX_ACTIVE)}
        newest = itertools.islice(store.scan_index(INDEX_ALL, reverse=True), FEED_RECENT)
        runs.update(key[-16:] for key in newest)
        return sorted(runs)

    def _tick_feed(self) -> list[_Inbox]:
        store = self.reader.store
        with self._lock:
            known = dict(self._known or {})
        followed = set(self._followed())
        runs = sorted(followed | set(known))
        heads = store.get_heads(runs)
        changed = [
            run for run, head in zip(runs, heads, strict=True) if head and known.get(run) != head[0]
        ]
        with self._lock:
            if self._known is not None:
                self._known = {
                    run: head[0]
                    for run, head in zip(runs, heads, strict=True)
                    if head is not None and run in followed
                }
            feeds = list(self._feeds)
        states = [s for s in store.get_states(changed) if s is not None]
        if not states:
            return []
        parsed = [(orjson.loads(s), s) for s in states]
        woken: list[_Inbox] = []
        for inbox in feeds:
            items = [state for head, state in parsed if inbox.wants(head)]
            if items:
                inbox.put(items)
                woken.append(inbox)
        return woken


def _step(projection: Any, folded: Any, sequence: int, data: bytes) -> tuple[Any, Change]:
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


# --- one watcher ----------------------------------------------------------------------------


class _Cursor:
    """One watcher's position: registration, the replay from the store, then the inbox."""

    def __init__(
        self,
        reader: ProjectionReader[Any],
        run: bytes,
        from_sequence: int | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.reader = reader
        self.tailer = tailer_of(reader)
        self.run = run
        self.last = -1 if from_sequence is None else from_sequence - 1
        self.fresh = from_sequence is None
        self.done = False
        self.loop = loop
        self.inbox = _Inbox(loop)
        self.registered = False
        self.opening_state: bytes | None = None

    def register(self) -> None:
        """Join the tailer's fan-out; from here on nothing the tailer hands out is missed."""
        self.inbox = _Inbox(self.loop)
        self.registered = True
        self.opening_state = self.tailer.subscribe(self.run, self.inbox)

    def open(self) -> Iterator[list[Change]]:
        """Register (unless done already), then the opening in pages: the current state,
        or the stored events after the last sequence seen up to where live messages start."""
        if not self.registered:
            self.register()
        state = self.opening_state
        if state is None:  # no event yet: the stream starts with the first one
            self.fresh = False
            return
        sequence, terminal = _header(state)
        if self.fresh:
            self.fresh = False
            self.last, self.done = sequence, terminal
            yield [Change(sequence, state, terminal)]
            return
        if self.last >= sequence:
            self.done = terminal
            return
        yield from self._replay(sequence)

    def _replay(self, upto: int) -> Iterator[list[Change]]:
        projection = self.reader.projection
        before = None if self.last < 0 else self.reader.get_at(self.run, None, self.last)
        folded = (
            None
            if before is None or isinstance(before, Absent)
            else projection.decode_state(before)
        )
        page: list[Change] = []
        for sequence, data in self.reader.store.iter_events(self.run, self.last + 1, upto):
            folded, change = _step(projection, folded, sequence, data)
            page.append(change)
            if len(page) == _PAGE:
                yield self.accept(page)
                page = []
        if page:
            yield self.accept(page)

    def accept(self, changes: list[Change]) -> list[Change]:
        """The changes not seen yet, up to and including the terminal one."""
        taken: list[Change] = []
        for change in changes:
            if self.done:
                break
            if change.deleted:
                taken.append(change)
                self.done = True
            elif change.sequence > self.last:
                taken.append(change)
                self.last = change.sequence
                self.done = change.terminal
        return taken

    def close(self) -> None:
        if self.registered:
            self.registered = False
            self.tailer.unsubscribe(self.run, self.inbox)

    def pending(self) -> list[Change] | None:
        """What the inbox holds now; None when the inbox was dropped (reopen)."""
        if self.inbox.dropped:
            self.close()
            return None
        return self.accept(self.inbox.take())


class RunWatch:
    """`query.watch(run_id)`: an iterator and an async iterator of `RunUpdate`s that ends
    after the run's terminal state (or when the run is deleted)."""

    def __init__(
        self, reader: ProjectionReader[Any], run: bytes, from_sequence: int | None = None
    ) -> None:
        self.reader = reader
        self.run = run
        self.from_sequence = from_sequence
        self._started: _Cursor | None = None

    def start(self) -> RunWatch:
        """Register with the tailer now, in this event loop (a server does this before it
        answers, so nothing folded after the request is missed); iteration does it too."""
        if self._started is None:
            self._started = self._cursor(asyncio.get_running_loop())
            self._started.register()
        return self

    def close(self) -> None:
        """Release a registration `start` made that no iteration took over."""
        started, self._started = self._started, None
        if started is not None:
            started.close()

    def _cursor(self, loop: asyncio.AbstractEventLoop | None) -> _Cursor:
        started, self._started = self._started, None
        if started is not None and started.loop is loop:
            return started
        if started is not None:
            started.close()
        return _Cursor(self.reader, self.run, self.from_sequence, loop)

    def __iter__(self) -> Iterator[RunUpdate]:
        for change in self.changes():
            if not change.deleted:
                yield _update(change)

    async def __aiter__(self) -> AsyncIterator[RunUpdate]:
        async for batch in self.abatches():
            for change in batch:
                if not change.deleted:
                    yield _update(change)

    def changes(self, keepalive: float | None = None) -> Iterator[Change]:
        """The raw changes, blocking this thread between them."""
        cursor = self._cursor(None)
        try:
            while True:
                for page in cursor.open():
                    yield from page
                while not cursor.done:
                    found = cursor.pending()
                    if found is None:
                        break
                    if found:
                        yield from found
                    else:
                        cursor.inbox.wait(keepalive)
                if cursor.done:
                    return
        finally:
            cursor.close()

    async def abatches(self, keepalive: float | None = None) -> AsyncIterator[list[Change]]:
        """The raw changes, as many at a time as are ready, awaiting between them; an empty
        list after `keepalive` idle seconds."""
        loop = asyncio.get_running_loop()
        cursor = self._cursor(loop)
        try:
            while True:
                pages = cursor.open()
                # A replay reads and folds stored events: off the loop, a page at a time.
                replaying = not cursor.fresh
                while True:
                    if replaying:
                        page = await asyncio.to_thread(next, pages, None)
                    else:
                        page = next(pages, None)
                    if page is None:
                        break
                    if page:
                        yield page
                inbox = cursor.inbox
                while not cursor.done:
                    inbox.ready_async.clear()
                    found = cursor.pending()
                    if found is None:
                        break
                    if found:
                        yield found
                        continue
                    try:
                        async with asyncio.timeout(keepalive):
                            await inbox.ready_async.wait()
                    except TimeoutError:
                        yield []
                if cursor.done:
                    return
        finally:
            cursor.close()


def _update(change: Change) -> RunUpdate:
    return RunUpdate(
        sequence=change.sequence,
        state=RunState.model_validate_json(change.state),
        event=change.event,
    )


class RunsWatch:
    """`query.watch_runs(...)`: the states of runs as they change (for list views); an
    iterator and an async iterator that run until closed."""

    def __init__(
        self,
        reader: ProjectionReader[Any],
        *,
        session_id: str | None = None,
        status: str | None = None,
        active: bool | None = None,
    ) -> None:
        self.reader = reader
        self.filters = (session_id, status, active)
        self._inbox: _FeedInbox | None = None

    def __iter__(self) -> Iterator[RunState]:
        for state in self.states():
            yield RunState.model_validate_json(state)

    async def __aiter__(self) -> AsyncIterator[RunState]:
        async for state in self.astates():
            if state is not None:
                yield RunState.model_validate_json(state)

    def start(self) -> RunsWatch:
        """Register with the tailer now, in this event loop (see `RunWatch.start`)."""
        if self._inbox is None:
            self._inbox = _FeedInbox(asyncio.get_running_loop(), *self.filters)
            tailer_of(self.reader).subscribe_feed(self._inbox)
        return self

    def close(self) -> None:
        """Release a registration `start` made that no iteration took over."""
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            tailer_of(self.reader).unsubscribe_feed(inbox)

    def _open(self, loop: asyncio.AbstractEventLoop | None) -> _FeedInbox:
        inbox, self._inbox = self._inbox, None
        if inbox is not None and inbox.loop is loop:
            return inbox
        if inbox is not None:
            tailer_of(self.reader).unsubscribe_feed(inbox)
        inbox = _FeedInbox(loop, *self.filters)
        tailer_of(self.reader).subscribe_feed(inbox)
        return inbox

    def states(self, keepalive: float | None = None) -> Iterator[bytes]:
        """The raw states (JSON), blocking this thread between them."""
        inbox = self._open(None)
        try:
            while True:
                items = inbox.take()
                if items:
                    yield from items
                else:
                    inbox.wait(keepalive)
        finally:
            tailer_of(self.reader).unsubscribe_feed(inbox)

    async def astates(self, keepalive: float | None = None) -> AsyncIterator[bytes | None]:
        """The raw states (JSON), awaiting between them; None after `keepalive` idle seconds."""
        inbox = self._open(asyncio.get_running_loop())
        try:
            while True:
                inbox.ready_async.clear()
                items = inbox.take()
                if items:
                    for item in items:
                        yield item
                    continue
                try:
                    async with asyncio.timeout(keepalive):
                        await inbox.ready_async.wait()
                except TimeoutError:
                    yield None
        finally:
            tailer_of(self.reader).unsubscribe_feed(inbox)
