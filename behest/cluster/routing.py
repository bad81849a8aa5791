"""Any node answers any request: an ASGI layer in front of the HTTP API (contract §6).

    GET /runs/{id}[/events|/watch]  answered here if this node serves the run's partition
                                    (partition = murmur2(run id) mod partitions), else
                                    forwarded to its owner (pooled connections, bounded
                                    timeouts); the owner never forwards again
    GET /wait?partition=&offset=    read-your-writes: returns once the owner folded it
    POST /runs/batch                scattered by owner, gathered in the order asked
    GET /runs                       every owner's page, merged newest first behind one
                                    cursor (the cursor is global: creation time ‖ run id)
    GET /cluster                    this node's view: owners, standbys, URLs

A node *serves* a partition when the group assigned it to this node and its store has
caught up with the log's end as it was at the takeover (`Ownership`); before that, and
while a partition has no live owner, the answer comes from a standby copy flagged with
`X-Behest-Stale` and its lag, or is a `503` with `Retry-After`: never a stale state
passed off as current, never another 5xx. Requests between nodes carry
`X-Behest-Scope: local` ("answer from your own state only").
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import httpx
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from behest.cluster.asgi import error_body, header, read_body, replay, send_json
from behest.cluster.membership import Membership
from behest.cluster.ownership import Ownership
from behest.cluster.pages import cursor_after, merge_pages, parse_batch, run_of_path, to_int
from behest.emit.partitioner import partition_for
from behest.errors import InvalidQueryError

__all__ = [
    "HEADER_FORWARDED",
    "HEADER_LAG_RECORDS",
    "HEADER_LAG_SECONDS",
    "HEADER_PARTITIONS",
    "HEADER_SCOPE",
    "HEADER_STALE",
    "RETRY_AFTER",
    "Router",
]

log = logging.getLogger(__name__)

HEADER_SCOPE: Final = "x-behest-scope"
HEADER_FORWARDED: Final = "x-behest-forwarded-by"
HEADER_PARTITIONS: Final = "x-behest-partitions"
HEADER_STALE: Final = "x-behest-stale"
HEADER_LAG_RECORDS: Final = "x-behest-lag-records"
HEADER_LAG_SECONDS: Final = "x-behest-lag-seconds"

RETRY_AFTER: Final = 1
_PASSED_BACK: Final = frozenset(
    {b"content-type", b"retry-after", b"cache-control", b"x-accel-buffering"}
)


class Router:
    """Wraps the HTTP API of one node so that it answers for every run (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        url: str,
        membership: Membership,
        ownership: Ownership,
        connect_timeout: float = 1.0,
        read_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.url = url
        self.membership = membership
        self.ownership = ownership
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        self._peers: httpx.AsyncClient | None = None
        self._local: httpx.AsyncClient | None = None
        self._api: httpx.AsyncClient | None = None

    # --- dispatch -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        local_only = header(scope, HEADER_SCOPE) == "local"
        if path == "/cluster" and method == "GET":
            await send_json(send, 200, orjson.dumps(self._cluster_json()))
        elif path == "/wait" and method == "GET":
            await self._wait(scope, receive, send, local_only)
        elif path == "/runs" and method == "GET":
            if local_only:
                await self._local_listing(scope, send)
            else:
                await self._listing(scope, send)
        elif path == "/runs/batch" and method == "POST":
            if local_only:
                await self._local_batch(scope, receive, send)
            else:
                await self._batch(scope, receive, send)
        elif (run_id := run_of_path(method, path)) is not None:
            await self._single(scope, receive, send, run_id, local_only)
        else:
            await self.app(scope, receive, send)

    def _cluster_json(self) -> dict[str, Any]:
        view = self.membership.view
        return {
            "self": self.url,
            "serving": sorted(self.ownership.serving()),
            **view.to_json_dict(),
        }

    # --- one run ------------------------------------------------------------------------------

    async def _single(
        self, scope: Scope, receive: Receive, send: Send, run_id: str, local_only: bool
    ) -> None:
        view = self.membership.view
        try:
            partition = partition_for(run_id, view.partitions) if view.partitions else None
        except (ValueError, InvalidQueryError):
            partition = None
        if partition is None:  # a malformed id (the API says why) or no topic seen yet
            await self.app(scope, receive, send)
            return
        if self.ownership.serves(partition):
            await self.app(scope, receive, send)
            return
        owner = view.owner(partition)
        if local_only or owner is None or owner == self.url:
            await self._unavailable(send, partition, owner)
            return
        body = await read_body(receive)
        stream = scope["path"].endswith("/watch")
        await self._forward(scope, send, owner, body, partition, stream=stream)

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        owner: str,
        body: bytes,
        partition: int,
        *,
        stream: bool = False,
    ) -> None:
        """The owner's answer, passed back as it comes (streams included)."""
        query = scope["query_string"].decode("latin-1")
        url = owner + scope["path"] + (f"?{query}" if query else "")
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"content-type", b"accept", b"last-event-id")
        }
        headers[HEADER_SCOPE] = "local"
        headers[HEADER_FORWARDED] = self.url
        timeout = httpx.Timeout(None, connect=self._timeout.connect) if stream else None
        request = self._peer_client().build_request(
            scope["method"], url, content=body, headers=headers, timeout=timeout
        )
        try:
            response = await self._peer_client().send(request, stream=True)
        except httpx.HTTPError as error:
            log.info("owner %s of partition %d did not answer: %r", owner, partition, error)
            self.membership.refresh_soon()
            await self._unavailable(send, partition, owner, reason=f"{owner} does not answer")
            return
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() in _PASSED_BACK]
            out += [(k, v) for k, v in response.headers.raw if k.lower().startswith(b"x-behest-")]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": out}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as error:  # the owner went away mid-answer: end the stream
            log.info("owner %s broke off an answer: %r", owner, error)
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _unavailable(
        self, send: Send, partition: int, owner: str | None, *, reason: str | None = None
    ) -> None:
        if reason is None:
            reason = (
                "it has no live owner" if owner is None else f"its owner {owner} is catching up"
            )
        error = (
            f"partition {partition} cannot be answered right now ({reason}); "
            f"retry after {RETRY_AFTER} s"
        )
        detail = {"partition": partition, "owner": owner}
        await send_json(
            send,
            503,
            orjson.dumps({"error": error, "detail": detail}),
            [(b"retry-after", str(RETRY_AFTER).encode())],
        )

    # --- read your writes ---------------------------------------------------------------------

    async def _wait(self, scope: Scope, receive: Receive, send: Send, local_only: bool) -> None:
        """Read-your-writes waits on the partition's owner, whose store takes the write."""
        params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        view = self.membership.view
        try:
            partition = int(params["partition"])
        except (KeyError, ValueError):
            partition = -1
        if not 0 <= partition < view.partitions or self.ownership.owns(partition):
            await self.app(scope, receive, send)  # its answer, or why the input is wrong
            return
        owner = view.owner(partition)
        if local_only or owner is None or owner == self.url:
            await self._unavailable(send, partition, owner)
            return
        await self._forward(scope, send, owner, b"", partition)

    # --- many runs ----------------------------------------------------------------------------

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

    async def _relay_failure(self, send: Send, url: str, status: int, content: bytes) -> None:
        if 400 <= status < 500 or status == 503:
            await send_json(
                send,
                status,
                content,
                [(b"retry-after", str(RETRY_AFTER).encode())] if status == 503 else [],
            )
            return
        log.warning("%s answered %d: %r", url, status, content[:200])
        await send_json(
            send,
            503,
            error_body(
                f"node {url} could not answer (status {status}); retry after {RETRY_AFTER} s"
            ),
            [(b"retry-after", str(RETRY_AFTER).encode())],
        )

    async def _call(
        self, url: str | None, method: str, path: str, *, content: bytes | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """One scoped request to a node (None or this node's URL: in-process)."""
        local = url is None or url == self.url
        client = self._local_client() if local else self._peer_client()
        target = ("http://local" if local else url) + path  # type: ignore[operator]
        headers = {HEADER_SCOPE: "local", HEADER_FORWARDED: self.url}
        if content is not None:
            headers["content-type"] = "application/json"
        try:
            response = await client.request(method, target, content=content, headers=headers)
        except httpx.HTTPError as error:
            self.membership.refresh_soon()
            return 503, error_body(f"node {url} does not answer ({error!r})"), {}
        return response.status_code, response.content, response.headers

    async def _inner(self, method: str, path: str) -> tuple[int, bytes, Mapping[str, str]]:
        """A request to the HTTP API this router wraps, in-process (no routing)."""
        if self._api is None:
            self._api = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app), base_url="http://local"
            )
        response = await self._api.request(method, path)
        return response.status_code, response.content, response.headers

    def _peer_client(self) -> httpx.AsyncClient:
        if self._peers is None:
            self._peers = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
        return self._peers

    def _local_client(self) -> httpx.AsyncClient:
        if self._local is None:
            self._local = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self), timeout=self._timeout
            )
        return self._local
