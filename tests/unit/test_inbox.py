"""A watcher's wait (`Quiet`): woken by its inbox, told when its stream has been quiet
for the keep-alive interval, with one timer per quiet spell rather than one per wait."""

from __future__ import annotations

import asyncio
import time

from behest.read.inbox import Inbox, Quiet


def _timers(loop: asyncio.AbstractEventLoop) -> int:
    """Timers the loop still has to run (cancelled ones excluded)."""
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return sum(not handle.cancelled() for handle in scheduled)


async def test_a_quiet_stream_is_told_after_the_keepalive() -> None:
    quiet = Quiet(Inbox(asyncio.get_running_loop()), 0.05)
    started = time.monotonic()
    assert await asyncio.wait_for(quiet.wait(), 5)
    assert time.monotonic() - started >= 0.045
    quiet.close()


async def test_a_busy_stream_gets_no_keepalive_and_one_timer_at_most() -> None:
    loop = asyncio.get_running_loop()
    inbox = Inbox(loop)
    quiet = Quiet(inbox, 0.2)
    before = _timers(loop)
    deadline = time.monotonic() + 0.5
    wakes = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        inbox.ready_async.clear()
        loop.call_soon(inbox.ready_async.set)  # the tailer hands it something
        assert not await quiet.wait()
        quiet.spoke()
        wakes += 1
        assert _timers(loop) <= before + 1
    assert wakes > 10
    quiet.close()
    assert _timers(loop) == before


async def test_a_woken_wait_returns_at_once_and_a_closed_one_rings_no_more() -> None:
    loop = asyncio.get_running_loop()
    inbox = Inbox(loop)
    quiet = Quiet(inbox, 0.05)
    waiting = asyncio.create_task(quiet.wait())
    await asyncio.sleep(0)
    inbox.ready_async.set()
    assert not await asyncio.wait_for(waiting, 1)
    inbox.ready_async.clear()
    quiet.close()
    await asyncio.sleep(0.1)
    assert not inbox.ready_async.is_set()


async def test_without_a_keepalive_the_wait_is_the_inbox_alone() -> None:
    loop = asyncio.get_running_loop()
    inbox = Inbox(loop)
    quiet = Quiet(inbox, None)
    before = _timers(loop)
    waiting = asyncio.create_task(quiet.wait())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert _timers(loop) == before
    inbox.ready_async.set()
    assert not await asyncio.wait_for(waiting, 1)
