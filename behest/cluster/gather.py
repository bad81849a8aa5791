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

import httpx
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from behest.cluster.asgi import read_body, replay, send_json
from behest.cluster.membership import Membership
from behest.cluster.ownership import Ownership
from behest.cluster.pages import cursor_after, merge_pages, parse_batch, to_int
from behest.emit.partitioner import partition_for

__all__ = ["HEADER_FORWARDED", "HEADER_PARTITIONS", "HEADER_SCOPE", "Gatherer"]

HEADER_SCOPE = "x-behest-scope"
HEADER_FORWARDED = "x-behest-forwarded-by"
HEADER_PARTITIONS = "x-behest-partitions"


class Gatherer:
    """The scatter-gather half of `behest.cluster.routing.Router` (which provides the
    transport: `_call`, `_inner`, `_peer_client`, and the failure answers)."""

    app: ASGIApp
    url: str
    membership: Membership
    ownership: Ownership
    _timeout: httpx.Timeout

    async def _call(
        self, url: str | None, method: str, path: str, *, content: bytes | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        raise NotImplementedError

    async def _inner(self, method: str, path: str) -> tuple[int, bytes, Mapping[str, str]]:
        raise NotImplementedError

    def _peer_client(self) -> httpx.AsyncClient:
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
        by_owner: dict[str, list[str]] = {}
        for run_id in ids:
            partition = partition_for(run_id, view.partitions)
            owner = view.owner(partition)
            if owner is None:
                await self._unavailable(send, partition, None)
                return
            by_owner.setdefault(owner, []).append(run_id)
        calls = {
            owner: self._call(
                owner,
                "POST",
                "/runs/batch",
                content=orjson.dumps({"run_ids": part, **({"as_of": as_of} if as_of else {})}),
            )
            for owner, part in by_owner.items()
        }
        answers = dict(zip(calls, await asyncio.gather(*calls.values()), strict=True))
        found: dict[str, bytes] = {}
        for owner, (status, content, _) in answers.items():
            if status != 200:
                await self._relay_failure(send, owner, status, content)
                return
            for state in orjson.loads(content)["runs"]:
                found[str(uuid.UUID(state["run_id"]))] = orjson.dumps(state)
        states = [found[r] for r in ids if r in found]
        missing = [r for r in ids if r not in found]
        await send_json(
            send,
            200,
            b'{"runs":[' + b",".join(states) + b'],"missing":' + orjson.dumps(missing) + b"}",
        )

    async def _watch_all(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET /runs/watch` over every node: each one's stream of its own runs' changes,
        merged message by message. When any of them ends (a node left, say), this one ends
        too, and the client's reconnect watches the nodes as they are then."""
        query = scope["query_string"].decode("latin-1")
        path = "/runs/watch" + (f"?{query}" if query else "")
        headers = {HEADER_SCOPE: "local", HEADER_FORWARDED: self.url}
        sources = sorted({self.url, *self.membership.view.nodes})
        client = self._peer_client()
        timeout = httpx.Timeout(None, connect=self._timeout.connect)
        streams: list[httpx.Response] = []
        try:
            for url in sources:
                request = client.build_request("GET", url + path, headers=headers, timeout=timeout)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError:
                    continue  # gone: its runs have (or will have) another owner to watch
                streams.append(response)
                if response.status_code != 200:  # bad input: the API's own answer
                    await self._relay_failure(
                        send, url, response.status_code, await response.aread()
                    )
                    return
            if not streams:
                await self._unavailable(send, 0, None, reason="no node answers")
                return
            await self._merge_streams(streams, receive, send)
        finally:
            for response in streams:
                await response.aclose()

    async def _merge_streams(
        self, streams: list[httpx.Response], receive: Receive, send: Send
    ) -> None:
        messages: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def pump(response: httpx.Response) -> None:
            pending = b""
            try:
                async for chunk in response.aiter_raw():
                    pending += chunk
                    while b"\n\n" in pending:
                        message, pending = pending.split(b"\n\n", 1)
                        await messages.put(message + b"\n\n")
            except httpx.HTTPError:
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
        unowned = [p for p in range(view.partitions) if view.owner(p) is None]
        if unowned:
            await self._unavailable(send, unowned[0], None)
            return
        params = parse_qsl(scope["query_string"].decode("latin-1"))
        limit = to_int(dict(params).get("limit"), 50)
        path = "/runs?" + urlencode(params)
        sources = sorted({self.url, *view.owners.values()})
        answers = await asyncio.gather(*(self._call(url, "GET", path) for url in sources))
        served: set[int] = set()
        pages = []
        for url, (status, content, headers) in zip(sources, answers, strict=True):
            if status != 200:
                await self._relay_failure(send, url, status, content)
                return
            served.update(int(p) for p in headers.get(HEADER_PARTITIONS, "").split(",") if p)
            pages.append(orjson.loads(content))
        missing = sorted(set(range(view.partitions)) - served)
        if missing:
            await self._unavailable(send, missing[0], view.owner(missing[0]))
            return
        page = merge_pages(pages, limit)
        await send_json(send, 200, orjson.dumps(page))

    async def _local_listing(self, scope: Scope, send: Send) -> None:
        """This node's page of a listing: only runs of partitions it serves, `limit` of them
        when it has that many (so the merge above knows every newer run), and which
        partitions it answered for."""
        serving = self.ownership.serving()
        partitions = self.membership.view.partitions
        params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        limit = to_int(params.get("limit"), 50)
        kept: list[Any] = []
        cursor = params.get("cursor")
        while True:
            page_params = {**params, **({"cursor": cursor} if cursor else {})}
            if not cursor:
                page_params.pop("cursor", None)
            status, content, _ = await self._inner("GET", "/runs?" + urlencode(page_params))
            if status != 200:
                await send_json(send, status, content)
                return
            page = orjson.loads(content)
            kept += [
                state
                for state in page["runs"]
                if partitions and partition_for(state["run_id"], partitions) in serving
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
            [(HEADER_PARTITIONS.encode(), ",".join(map(str, sorted(serving))).encode())],
        )
