"""Scatter and gather: the requests that need every owner (batches, listings, watching all).

The parts a router asks of each node carry `X-Behest-Scope: local`: a node answers them
from the partitions it serves only, and says which (`X-Behest-Partitions`), so the merge
knows whether every partition was covered. The pure parts are in `behest.cluster.pages`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from behest.cluster.asgi import read_body, replay, send_json
from behest.cluster.membership import Membership
from behest.cluster.ownership import Ownership
from behest.cluster.pages import cursor_after, merge_pages, parse_batch, to_int
from behest.cluster.peers import PeerError, PeerPool, PeerResponse
from behest.cluster.standby_reads import SCOPE_STANDBY, stale_flags, staleness_of
from behest.emit.partitioner import partition_for

__all__ = ["HEADER_FORWARDED", "HEADER_PARTITIONS", "HEADER_SCOPE", "Gatherer"]

HEADER_SCOPE = "x-behest-scope"
HEADER_FORWARDED = "x-behest-forwarded-by"
HEADER_PARTITIONS = "x-behest-partitions"


class Gatherer:
    """The scatter-gather half of `behest.cluster.routing.Router` (which provides the
    transport: `_call`, `_inner`, `_pool`, and the failure answers)."""

    app: ASGIApp
    url: str
    membership: Membership
    ownership: Ownership
    _pool: PeerPool

    async def _call(
        self,
        url: str | None,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        scope: str = "local",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        raise NotImplementedError

    async def _inner(
        self, method: str, path: str, app: ASGIApp | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        raise NotImplementedError

    async def _relay_failure(self, send: Send, url: str, status: int, content: bytes) -> None:
        raise NotImplementedError

    async def _unavailable(
        self, send: Send, partition: int, owner: str | None, *, reason: str | None = None
    ) -> None:
        raise NotImplementedError

    async def _batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        request = parse_batch(body)
        view = self.membership.view
        if request is None or not view.partitions:  # the API explains what is wrong with it
            await self.app(scope, replay(body), send)
            return
        ids, as_of = request
        extra = {"as_of": as_of} if as_of else {}
        by_owner: dict[str | None, list[str]] = {}
        for run_id in ids:
            by_owner.setdefault(view.owner(partition_for(run_id, view.partitions)), []).append(
                run_id
            )
        orphans = by_owner.pop(None, [])
        owners = [o for o in by_owner if o is not None]
        answers = await asyncio.gather(
            *(
                self._call(o, "POST", "/runs/batch", content=_batch_body(by_owner[o], extra))
                for o in owners
            )
        )
        found: dict[str, bytes] = {}
        for owner, (status, content, _) in zip(owners, answers, strict=True):
            if status == 503:  # not served there right now: a standby copy may answer
                orphans += by_owner[owner]
            elif status != 200:
                await self._relay_failure(send, owner, status, content)
                return
            else:
                _take(found, content)
        copies: list[tuple[int, float]] = []
        if orphans and not await self._batch_from_standbys(send, orphans, extra, found, copies):
            return
        states = [found[r] for r in ids if r in found]
        missing = [r for r in ids if r not in found]
        await send_json(
            send,
            200,
            b'{"runs":[' + b",".join(states) + b'],"missing":' + orjson.dumps(missing) + b"}",
            stale_flags(copies),
        )

    async def _batch_from_standbys(
        self,
        send: Send,
        runs: list[str],
        extra: dict[str, str],
        found: dict[str, bytes],
        copies: list[tuple[int, float]],
    ) -> bool:
        """The runs of partitions no owner answers for, from nodes that keep standby copies
        of them (into `found`, their staleness into `copies`); False once a 503 is sent."""
        view = self.membership.view
        by_node: dict[str, list[str]] = {}
        for run_id in runs:
            partition = partition_for(run_id, view.partitions)
            nodes = view.standbys.get(partition, ())
            if not nodes:
                await self._unavailable(send, partition, view.owner(partition))
                return False
            node = self.url if self.url in nodes else nodes[0]
            by_node.setdefault(node, []).append(run_id)
        targets = list(by_node)
        answers = await asyncio.gather(
            *(
                self._call(
                    n,
                    "POST",
                    "/runs/batch",
                    content=_batch_body(by_node[n], extra),
                    scope=SCOPE_STANDBY,
                )
                for n in targets
            )
        )
        for node, (status, content, headers) in zip(targets, answers, strict=True):
            if status != 200:
                await self._relay_failure(send, node, status, content)
                return False
            _take(found, content)
            staleness = staleness_of(headers)
            if staleness is not None:
                copies.append(staleness)
        return True

    async def _watch_all(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET /runs/watch` over every node: each one's stream of its own runs' changes,
        merged message by message. When any of them ends (a node left, say), this one ends
        too, and the client's reconnect watches the nodes as they are then."""
        query = scope["query_string"]
        target = b"/runs/watch" + (b"?" + query if query else b"")
        headers = [
            (HEADER_SCOPE.encode(), b"local"),
            (HEADER_FORWARDED.encode(), self.url.encode()),
        ]
        sources = sorted({self.url, *self.membership.view.nodes})
        streams: list[PeerResponse] = []
        try:
            for url in sources:
                try:
                    response = await self._pool.request(url, "GET", target, headers, stream=True)
                except PeerError:
                    continue  # gone: its runs have (or will have) another owner to watch
                streams.append(response)
                if response.status != 200:  # bad input: the API's own answer
                    try:
                        content = await response.read()
                    except PeerError:
                        content = b""
                    await self._relay_failure(send, url, response.status, content)
                    return
            if not streams:
                await self._unavailable(send, 0, None, reason="no node answers")
                return
            await self._merge_streams(streams, receive, send)
        finally:
            for response in streams:
                response.close()

    async def _merge_streams(
        self, streams: list[PeerResponse], receive: Receive, send: Send
    ) -> None:
        messages: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def pump(response: PeerResponse) -> None:
            pending = b""
            try:
                async for chunk in response.chunks():
                    pending += chunk
                    while b"\n\n" in pending:
                        message, pending = pending.split(b"\n\n", 1)
                        await messages.put(message + b"\n\n")
            except PeerError:
                pass
            await messages.put(None)  # this source ended

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            await messages.put(None)

        tasks = [asyncio.create_task(pump(r)) for r in streams]
        tasks.append(asyncio.create_task(disconnected()))
        # Each node opens its stream with a `retry:` line once it watches: wait for all of
        # them, so a client that read this stream's first line misses no change anywhere.
        early: list[bytes | None] = []
        openings = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                while openings < len(streams):
                    message = await messages.get()
                    if message is not None and message.startswith(b"retry:"):
                        openings += 1
                        if openings > 1:
                            continue
                    early.append(message)
                    if message is None:
                        break
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        try:
            for message in early:
                if message is None:
                    await send({"type": "http.response.body", "body": b""})
                    return
                await send({"type": "http.response.body", "body": message, "more_body": True})
            while (message := await messages.get()) is not None:
                if message.startswith(b"retry:"):
                    continue  # one opening line is enough
                await send({"type": "http.response.body", "body": message, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            for task in tasks:
                task.cancel()

    async def _local_batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A part of a scattered batch: answered only if this node serves every run's
        partition (else a 503: the router asking retries after its view is fresh)."""
        body = await read_body(receive)
        request = parse_batch(body)
        partitions = self.membership.view.partitions
        if request is not None and partitions:
            for run_id in request[0]:
                partition = partition_for(run_id, partitions)
                if not self.ownership.serves(partition):
                    owner = self.membership.view.owner(partition)
                    await self._unavailable(send, partition, owner)
                    return
        await self.app(scope, replay(body), send)

    async def _listing(self, scope: Scope, send: Send) -> None:
        view = self.membership.view
        params = parse_qsl(scope["query_string"].decode("latin-1"))
        limit = to_int(dict(params).get("limit"), 50)
        path = "/runs?" + urlencode(params)
        sources = sorted({self.url, *view.owners.values()})
        answers = await asyncio.gather(*(self._call(url, "GET", path) for url in sources))
        served: set[int] = set()
        pages = []
        for url, (status, content, headers) in zip(sources, answers, strict=True):
            if status == 503:
                continue  # gone or catching up: its partitions are missing below
            if status != 200:
                await self._relay_failure(send, url, status, content)
                return
            served.update(_partitions(headers))
            pages.append(orjson.loads(content))
        missing = set(range(view.partitions)) - served
        copies: list[tuple[int, float]] = []
        by_node: dict[str, list[int]] = {}
        for partition in sorted(missing):  # no owner serves it now: a standby copy may
            nodes = view.standbys.get(partition, ())
            if nodes:
                by_node.setdefault(self.url if self.url in nodes else nodes[0], []).append(
                    partition
                )
        standby_nodes = list(by_node)
        answers = await asyncio.gather(
            *(
                self._call(
                    url,
                    "GET",
                    path,
                    scope=SCOPE_STANDBY,
                    headers={HEADER_PARTITIONS: ",".join(map(str, by_node[url]))},
                )
                for url in standby_nodes
            )
        )
        for status, content, headers in answers:
            if status == 200:
                missing -= set(_partitions(headers))
                pages.append(orjson.loads(content))
                staleness = staleness_of(headers)
                if staleness is not None:
                    copies.append(staleness)
        if missing:
            first = min(missing)
            await self._unavailable(send, first, view.owner(first))
            return
        page = merge_pages(pages, limit)
        await send_json(send, 200, orjson.dumps(page), stale_flags(copies))

    async def _local_listing(self, scope: Scope, send: Send) -> None:
        """This node's page of a listing: only runs of partitions it serves."""
        await self._partition_listing(scope, send, self.app, self.ownership.serving(), [])

    async def _partition_listing(
        self,
        scope: Scope,
        send: Send,
        app: ASGIApp,
        partitions: frozenset[int],
        flags: list[tuple[bytes, bytes]],
    ) -> None:
        """A page of `app`'s listing with only runs of `partitions`, `limit` of them when
        it has that many (so the merge above knows every newer run), and which partitions
        it answered for (`flags`: the headers of a standby copy's answer)."""
        count = self.membership.view.partitions
        params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        limit = to_int(params.get("limit"), 50)
        kept: list[Any] = []
        cursor = params.get("cursor")
        while True:
            page_params = {**params, **({"cursor": cursor} if cursor else {})}
            if not cursor:
                page_params.pop("cursor", None)
            status, content, _ = await self._inner("GET", "/runs?" + urlencode(page_params), app)
            if status != 200:
                await send_json(send, status, content)
                return
            page = orjson.loads(content)
            kept += [
                state
                for state in page["runs"]
                if count and partition_for(state["run_id"], count) in partitions
            ]
            cursor = page["next_cursor"]
            if len(kept) >= limit or not cursor:
                break
        more = len(kept) > limit or (len(kept) == limit and cursor is not None)
        kept = kept[:limit]
        next_cursor = cursor_after(kept[-1]) if more and kept else None
        await send_json(
            send,
            200,
            orjson.dumps({"runs": kept, "next_cursor": next_cursor}),
            [(HEADER_PARTITIONS.encode(), ",".join(map(str, sorted(partitions))).encode()), *flags],
        )


def _batch_body(runs: list[str], extra: dict[str, str]) -> bytes:
    return orjson.dumps({"run_ids": runs, **extra})


def _take(found: dict[str, bytes], content: bytes) -> None:
    """The states of a batch's answer, by run id."""
    for state in orjson.loads(content)["runs"]:
        found[str(uuid.UUID(state["run_id"]))] = orjson.dumps(state)


def _partitions(headers: Mapping[str, str]) -> list[int]:
    """The partitions a node's listing page says it answered for."""
    return [int(p) for p in headers.get(HEADER_PARTITIONS, "").split(",") if p]
