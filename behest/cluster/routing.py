"""Any node answers any request: an ASGI layer in front of the HTTP API (contract §6).

    GET /runs/{id}[/events|/watch]  answered here if this node serves the run's partition
                                    (partition = murmur2(run id) mod partitions), else
                                    forwarded to its owner (pooled connections, bounded
                                    timeouts); the owner never forwards again
    GET /wait?partition=&offset=    read-your-writes: returns once the owner folded it
    POST /runs/batch                scattered by owner, gathered in the order asked
    GET /runs                       every owner's page, merged newest first behind one
                                    cursor (the cursor is global: creation time ‖ run id)
    GET /runs/watch                 every node's stream of changes, merged (gather.py)
    GET /cluster                    this node's view: owners, standbys, URLs

A node *serves* a partition when the group assigned it to this node and its store has
caught up with the log's end as it was at the takeover (`Ownership`); before that, and
while a partition has no live owner, the answer comes from a standby copy flagged with
`X-Behest-Stale` and its lag, or is a `503` with `Retry-After`: never a stale state
passed off as current, never another 5xx. Requests between nodes carry
`X-Behest-Scope: local` ("answer from your own state only").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote

import httpx
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from behest.cluster.asgi import error_body, header, read_body, replay, send_json
from behest.cluster.gather import HEADER_FORWARDED, HEADER_PARTITIONS, HEADER_SCOPE, Gatherer
from behest.cluster.membership import Membership
from behest.cluster.ownership import Ownership
from behest.cluster.pages import run_of_path
from behest.cluster.peers import PeerError, PeerPool
from behest.cluster.standby_reads import (
    HEADER_LAG_RECORDS,
    HEADER_LAG_SECONDS,
    HEADER_STALE,
    SCOPE_STANDBY,
    StandbyReads,
    stale_flags,
)
from behest.emit.partitioner import partition_for
from behest.read.http import MAX_WAIT

if TYPE_CHECKING:
    from behest.cluster.standby import StandbyCopies
from behest.errors import InvalidQueryError

__all__ = [
    "HEADER_FORWARDED",
    "HEADER_LAG_RECORDS",
    "HEADER_LAG_SECONDS",
    "HEADER_NODE",
    "HEADER_PARTITIONS",
    "HEADER_SCOPE",
    "HEADER_STALE",
    "RETRY_AFTER",
    "Router",
]

log = logging.getLogger(__name__)

HEADER_NODE: Final = "x-behest-node"
"""On every answer a node gives from its own state: its URL (forwarded answers keep it)."""

RETRY_AFTER: Final = 1
_PASSED_BACK: Final = frozenset(
    {b"content-type", b"retry-after", b"cache-control", b"x-accel-buffering"}
)
_MEMO_SIZE: Final = 16384
"""Run ids whose partition a router remembers (about 2 MB)."""
_PASSED_ON: Final = frozenset({b"content-type", b"accept", b"last-event-id"})


class Router(Gatherer, StandbyReads):
    """Wraps the HTTP API of one node so that it answers for every run (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        url: str,
        membership: Membership,
        ownership: Ownership,
        standby: StandbyCopies | None = None,
        standby_app: ASGIApp | None = None,
        connect_timeout: float = 1.0,
        read_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.url = url
        self.membership = membership
        self.ownership = ownership
        self.standby = standby
        self.standby_app = standby_app
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        self._pool = PeerPool(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self._marks = [(HEADER_SCOPE.encode(), b"local"), (HEADER_FORWARDED.encode(), url.encode())]
        self._mark = (HEADER_NODE.encode(), url.encode())
        self._partitions: dict[str, int] = {}
        self._memo_count = 0
        self._local: httpx.AsyncClient | None = None
        self._apis: dict[int, httpx.AsyncClient] = {}

    # --- dispatch -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        scoped = header(scope, HEADER_SCOPE)
        local_only = scoped is not None
        if scoped == SCOPE_STANDBY and method == "POST" and path == "/runs/batch":
            await self._standby_batch(scope, receive, send)
        elif scoped == SCOPE_STANDBY and method == "GET" and path == "/runs":
            await self._standby_listing(scope, send)
        elif path == "/cluster" and method == "GET":
            await send_json(send, 200, orjson.dumps(self._cluster_json()))
        elif path == "/wait" and method == "GET":
            await self._wait(scope, receive, send, local_only)
        elif path == "/runs/watch" and method == "GET" and not local_only:
            await self._watch_all(scope, receive, send)
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
            partition = self._partition_of(run_id, view.partitions) if view.partitions else None
        except (ValueError, InvalidQueryError):
            partition = None
        if partition is None:  # a malformed id (the API says why) or no topic seen yet
            await self.app(scope, receive, send)
            return
        if self.ownership.serves(partition):
            await self._answer_here(scope, receive, send)
            return
        owner = view.owner(partition)
        body = await read_body(receive)
        reason = None
        if not local_only and owner is not None and owner != self.url:
            stream = scope["path"].endswith("/watch")
            if await self._forward(scope, send, owner, body, partition, stream=stream):
                return
            reason = f"{owner} does not answer for it"
        if not local_only and await self._from_standby(scope, body, send, partition):
            return
        await self._unavailable(send, partition, owner, reason=reason)

    def _partition_of(self, run_id: str, partitions: int) -> int:
        """`partition_for`, remembered per run id (murmur2 in Python costs ~10 µs)."""
        memo = self._partitions
        if self._memo_count != partitions or len(memo) >= _MEMO_SIZE:
            memo.clear()
            self._memo_count = partitions
        found = memo.get(run_id)
        if found is None:
            found = memo[run_id] = partition_for(run_id, partitions)
        return found

    async def _answer_here(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The wrapped API's answer, marked with this node's URL (`X-Behest-Node`)."""
        mark = self._mark

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), mark]}
            await send(message)

        await self.app(scope, receive, marked)

    async def _from_standby(self, scope: Scope, body: bytes, send: Send, partition: int) -> bool:
        """Answer from this node's standby copy, flagged with how stale it is (if it has one
        that was at the log's end once); False if it has none."""
        if self.standby is None or self.standby_app is None or scope["path"].endswith("/watch"):
            return False
        staleness = self.standby.staleness(partition)
        if staleness is None:
            return False
        flags = stale_flags([staleness])

        async def flagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *flags]}
            await send(message)

        await self.standby_app(scope, replay(body), flagged)
        return True

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        owner: str,
        body: bytes,
        partition: int,
        *,
        stream: bool = False,
        read_timeout: float | None = None,
    ) -> bool:
        """The owner's answer, passed back as it comes (streams included); False, with
        nothing sent, if the owner does not answer or answers 503 and a standby might."""
        target: bytes = scope.get("raw_path") or quote(scope["path"]).encode()
        if scope["query_string"]:  # (some servers leave the query in raw_path too)
            target = target.partition(b"?")[0] + b"?" + scope["query_string"]
        headers = [pair for pair in scope["headers"] if pair[0] in _PASSED_ON]
        headers += self._marks
        try:
            response = await self._pool.request(
                owner,
                scope["method"],
                target,
                headers,
                body,
                stream=stream,
                read_timeout=read_timeout,
            )
        except PeerError as error:
            log.info("owner %s of partition %d did not answer: %s", owner, partition, error)
            self.membership.refresh_soon()
            return False
        try:
            if response.status == 503 and self.standby is not None:
                return False
            out = [
                (k, v) for k, v in response.headers if k in _PASSED_BACK or k[:9] == b"x-behest-"
            ]
            if response.complete:  # all of it here: passed back in one piece
                content = response.body()
                out.append((b"content-length", b"%d" % len(content)))
                await send(
                    {"type": "http.response.start", "status": response.status, "headers": out}
                )
                await send({"type": "http.response.body", "body": content})
                return True
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            try:
                async for chunk in response.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except PeerError as error:  # the owner went away mid-answer: end the stream
                log.info("owner %s broke off an answer: %s", owner, error)
            await send({"type": "http.response.body", "body": b""})
        finally:
            response.close()
        return True

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
            await self._answer_here(scope, receive, send)  # its answer, or why it is wrong
            return
        owner = view.owner(partition)
        if local_only or owner is None or owner == self.url:
            await self._unavailable(send, partition, owner)
            return
        waited = self._pool.read_timeout + MAX_WAIT  # the owner may hold it that long
        if not await self._forward(scope, send, owner, b"", partition, read_timeout=waited):
            await self._unavailable(send, partition, owner, reason=f"{owner} does not answer")

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
        self,
        url: str | None,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        scope: str = "local",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """One scoped request to a node (None or this node's URL: in-process); the
        answer's header names are lowercase."""
        sent = {**(headers or {}), HEADER_SCOPE: scope, HEADER_FORWARDED: self.url}
        if content is not None:
            sent["content-type"] = "application/json"
        if url is None or url == self.url:
            response = await self._local_client().request(
                method, "http://local" + path, content=content, headers=sent
            )
            return response.status_code, response.content, response.headers
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sent.items()]
        try:
            answer = await self._pool.request(url, method, path.encode(), raw, content or b"")
        except PeerError as error:
            self.membership.refresh_soon()
            return 503, error_body(f"node {url} does not answer ({error})"), {}
        try:
            body = answer.body()
        finally:
            answer.close()
        names = {k.decode("latin-1"): v.decode("latin-1") for k, v in answer.headers}
        return answer.status, body, names

    async def _inner(
        self, method: str, path: str, app: ASGIApp | None = None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """A request to the HTTP API this router wraps (or to `app`, e.g. the standby
        copies' API), in-process (no routing)."""
        target = self.app if app is None else app
        client = self._apis.get(id(target))
        if client is None:
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=target), base_url="http://local"
            )
            self._apis[id(target)] = client
        response = await client.request(method, path)
        return response.status_code, response.content, response.headers

    def _local_client(self) -> httpx.AsyncClient:
        if self._local is None:
            self._local = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self), timeout=self._timeout
            )
        return self._local
