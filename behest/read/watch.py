"""Watch runs live: each run's events and the state after each, as they are folded.

    for update in query.watch(run_id):                  # or `async for`
        print(update.sequence, update.event, update.state.status)
    for update in query.watch(run_id, from_sequence=42):  # replay 42, 43, ... then live
        ...

One `Tailer` per open store (`behest.read.tailer`) does all the watching and hands each
watcher's inbox the changes of its run; this module is the watcher's side.

No gap, no duplicate: a watcher registers first, learning the last sequence P the tailer
has handed out for its run; it reads the events up to P from the store (where every event
is kept) and takes only sequences after P from its inbox. A watcher that falls behind (its
inbox over `MAX_BACKLOG`) is dropped from the fan-out and re-registers the same way, so
slowness costs it latency, never events.

A late event (below sequences already sent; the projector re-folds its run in place) is
sent once to each watcher that has not had its sequence: `sent` tracks what each watcher
has (up to its last sequence, less the gaps), and the tailer hands out, beside the next
events, each stored event that filled a gap, with the state at its position re-folded.

The runs feed (`watch_runs`) hands out the states of runs as they change, for list views.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

from behest.events import RunState
from behest.fold.sequences import RunHead
from behest.read.feed import RunDeleted
from behest.read.inbox import MAX_BACKLOG, FeedInbox, Inbox, Quiet
from behest.read.reader import Absent, ProjectionReader
from behest.read.tailer import (
    DEFAULT_INTERVAL,
    FEED_INTERVAL,
    Change,
    Tailer,
    event_json,
    header,
    step,
    tailer_of,
)
from behest.watching import RunUpdate

__all__ = [
    "DEFAULT_INTERVAL",
    "FEED_INTERVAL",
    "MAX_BACKLOG",
    "Change",
    "RunDeleted",
    "RunUpdate",
    "RunWatch",
    "RunsWatch",
    "Tailer",
    "event_json",
    "tailer_of",
]

_PAGE: Final = 256


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
        self.inbox = Inbox(loop)
        self.registered = False
        self.opening_state: bytes | None = None
        self.opening_head: RunHead | None = None
        self.sent = RunHead(self.last)
        """What this watcher was sent: up to `last`, but for the sequences `missing` then."""

    def register(self) -> None:
        """Join the tailer's fan-out; from here on nothing the tailer hands out is missed."""
        self.inbox = Inbox(self.loop)
        self.registered = True
        self.opening_state, self.opening_head = self.tailer.subscribe(self.run, self.inbox)

    def open(self) -> Iterator[list[Change]]:
        """Register (unless done already), then the opening in pages: the current state,
        or the stored events after the last sequence seen up to where live messages start."""
        if not self.registered:
            self.register()
        state = self.opening_state
        if state is None:  # no event yet: the stream starts with the first one
            self.fresh = False
            return
        sequence, terminal = header(state)
        missing = () if self.opening_head is None else self.opening_head.missing
        if self.fresh:
            self.fresh = False
            self.last, self.done = sequence, terminal
            self.sent = _unsent(RunHead(sequence), missing)
            yield [Change(sequence, state, terminal)]
            return
        # Below where it resumes, the sequences the store had not folded when this watcher
        # registered were sent to no one: a late one is sent to it when it comes.
        self.sent = _unsent(self.sent, missing)
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
            folded, change = step(projection, folded, sequence, data)
            page.append(change)
            if len(page) == _PAGE:
                yield self.accept(page)
                page = []
        if page:
            yield self.accept(page)

    def accept(self, changes: list[Change]) -> list[Change]:
        """The changes not seen yet, up to and including the terminal one: in sequence
        order, and a late event once if it fills a sequence this watcher has not had."""
        taken: list[Change] = []
        for change in changes:
            if self.done:
                break
            if change.deleted:
                taken.append(change)
                self.done = True
            elif change.late:
                if self.sent.is_missing(change.sequence):
                    taken.append(change)
                    self.sent = self.sent.fill(change.sequence)
            elif change.sequence > self.last:
                taken.append(change)
                self.sent = self.sent.advance(change.sequence)
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


def _unsent(sent: RunHead, missing: tuple[tuple[int, int], ...]) -> RunHead:
    """`sent`, with the ranges `missing` (up to its last sequence) as not sent."""
    ranges = sorted(
        [*sent.missing, *((a, min(b, sent.last)) for a, b in missing if a <= sent.last)]
    )
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return RunHead(sent.last, tuple(merged))


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
        quiet = Quiet(cursor.inbox, keepalive)
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
                        quiet.spoke()
                inbox = quiet.inbox = cursor.inbox
                while not cursor.done:
                    inbox.ready_async.clear()
                    found = cursor.pending()
                    if found is None:
                        break
                    if found:
                        yield found
                        quiet.spoke()
                    elif await quiet.wait():
                        yield []
                        quiet.spoke()
                if cursor.done:
                    return
        finally:
            quiet.close()
            cursor.close()


def _update(change: Change) -> RunUpdate:
    return RunUpdate(
        sequence=change.sequence,
        state=RunState.model_validate_json(change.state),
        event=change.event,
    )


class RunsWatch:
    """`query.watch_runs(...)`: the states of runs as they change (for list views), and a
    `RunDeleted` for each run deleted (whatever the filters); an iterator and an async
    iterator that run until closed."""

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
        self._inbox: FeedInbox | None = None

    def __iter__(self) -> Iterator[RunState | RunDeleted]:
        for state in self.states():
            yield state if isinstance(state, RunDeleted) else RunState.model_validate_json(state)

    async def __aiter__(self) -> AsyncIterator[RunState | RunDeleted]:
        async for state in self.astates():
            if isinstance(state, RunDeleted):
                yield state
            elif state is not None:
                yield RunState.model_validate_json(state)

    def start(self) -> RunsWatch:
        """Register with the tailer now, in this event loop (see `RunWatch.start`)."""
        if self._inbox is None:
            self._inbox = FeedInbox(asyncio.get_running_loop(), *self.filters)
            tailer_of(self.reader).subscribe_feed(self._inbox)
        return self

    def close(self) -> None:
        """Release a registration `start` made that no iteration took over."""
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            tailer_of(self.reader).unsubscribe_feed(inbox)

    def _open(self, loop: asyncio.AbstractEventLoop | None) -> FeedInbox:
        inbox, self._inbox = self._inbox, None
        if inbox is not None and inbox.loop is loop:
            return inbox
        if inbox is not None:
            tailer_of(self.reader).unsubscribe_feed(inbox)
        inbox = FeedInbox(loop, *self.filters)
        tailer_of(self.reader).subscribe_feed(inbox)
        return inbox

    def states(self, keepalive: float | None = None) -> Iterator[bytes | RunDeleted]:
        """The raw states (JSON) and deletions, blocking this thread between them."""
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

    async def astates(
        self, keepalive: float | None = None
    ) -> AsyncIterator[bytes | RunDeleted | None]:
        """The raw states (JSON) and deletions, awaiting between them; None after
        `keepalive` idle seconds."""
        inbox = self._open(asyncio.get_running_loop())
        quiet = Quiet(inbox, keepalive)
        try:
            while True:
                inbox.ready_async.clear()
                items = inbox.take()
                if items:
                    for item in items:
                        yield item
                    quiet.spoke()
                elif await quiet.wait():
                    yield None
                    quiet.spoke()
        finally:
            quiet.close()
            tailer_of(self.reader).unsubscribe_feed(inbox)
