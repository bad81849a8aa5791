"""Requests between nodes: a small pooled HTTP/1.1 keep-alive client on asyncio.

A forwarded `GET /runs/{id}` is one write of the request's bytes on a connection kept
open to the owner and one parse of its answer in C (httptools, which uvicorn uses too),
with no per-request client objects beyond the answer's headers and body: httpx spent
more than the owner's own answer on it. Per peer, at most `max_connections` connections
(busy or idle); a request waits up to `connect_timeout` for one, and up to
`connect_timeout` to open one; the answer has `read_timeout` to arrive (a stream: its
head). A GET that finds its reused connection closed by the peer before any byte of the
answer came (the peer's keep-alive timeout) is sent once more, on a new connection;
nothing else is retried. Every failure is a `PeerError` saying which peer and why.

    PeerError             the peer did not answer: refused, timed out, broke off, or
                          answered something that is not HTTP/1.1
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

from behest.errors import BehestError

__all__ = ["PeerError", "PeerPool", "PeerResponse"]

_RETRIED: Final = "GET"
_PAUSE_AT: Final = 256 * 1024
"""Bytes of a streamed answer buffered unread before the socket stops being read."""


class PeerError(BehestError):
    """A node did not answer a request another node sent it (why is in the message)."""


class _Peer:
    """The connections to one node: idle ones (newest last), and how many are open."""

    __slots__ = ("address", "host_header", "idle", "open", "ssl", "url", "waiters")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PeerError(f"cannot send to {url!r}: a node's URL is http(s)://HOST[:PORT]")
        secure = parts.scheme == "https"
        self.url = url
        self.address = (parts.hostname, parts.port or (443 if secure else 80))
        self.host_header = parts.netloc.encode("idna")
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if secure else None
        self.idle: deque[tuple[_Connection, float]] = deque()
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: httptools parses what comes in; one request at a time."""

    def __init__(self, peer: _Peer) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.received = False
        self.framed = False
        self.timed_out = False
        self.keep_alive = False
        self.head_done = False
        self.done = False
        self.error: PeerError | None = None
        self.stream = False
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nothing asked: a peer that talks out of turn is not reused
            self._close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(f"{self.peer.url} switched protocols, which no node asks it to")
        except httptools.HttpParserError as error:
            self._fail(f"{self.peer.url} answered something that is not HTTP/1.1 ({error})")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.busy or self.done:
            return
        if self.head_done and not self.framed:  # an answer delimited by the connection's end
            self.on_message_complete()
            return
        why = "before answering" if not self.received else "in the middle of its answer"
        self._fail(f"{self.peer.url} closed the connection {why}" + (f" ({exc})" if exc else ""))

    def pause_writing(self) -> None:  # requests are small; nothing to hold back
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self.framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True
        if self.stream:
            self._cancel_timer()  # a stream may stay quiet for as long as it likes
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        if self.stream:
            self.buffered += len(body)
            if self.buffered > _PAUSE_AT and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self.done:
            return
        self.done = True
        self.keep_alive = self._keeps_alive()  # the parser forgets it once this returns
        self._cancel_timer()
        self._wake()

    # --- the request in flight ---------------------------------------------------------------

    def send(self, data: bytes, *, stream: bool, timeout: float | None) -> None:
        """Start a request: `data` is all of it (head and body)."""
        self.busy = True
        self.stream = stream
        self.status = 0
        self.headers = []
        self.chunks.clear()
        self.buffered = 0
        self.received = self.framed = self.timed_out = self.keep_alive = False
        self.head_done = self.done = False
        self.error = None
        if timeout is not None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(timeout, self._time_out, timeout)
        if self.closed or self.transport is None or self.transport.is_closing():
            self._fail(f"{self.peer.url} closed the connection before answering")
            return
        self.transport.write(data)

    async def arrived(self) -> None:
        """Until the answer's head (a stream) or all of it is here; raises its failure."""
        while self.error is None and not (self.head_done if self.stream else self.done):
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        if self.error is not None:
            raise self.error

    async def next_chunk(self) -> bytes | None:
        """The next piece of a streamed body; None at its end."""
        while not self.chunks:
            if self.done:
                return None
            if self.error is not None:
                raise self.error
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered <= _PAUSE_AT // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.closed and self.error is None

    def _keeps_alive(self) -> bool:
        try:
            return bool(self.parser.should_keep_alive())
        except httptools.HttpParserError:
            return False

    def _time_out(self, timeout: float) -> None:
        self.timer = None
        self.timed_out = True
        self._fail(f"{self.peer.url} did not answer within {timeout:g} s")

    def _fail(self, message: str) -> None:
        if self.error is None and not self.done:
            self.error = PeerError(message)
        self._cancel_timer()
        self._wake()
        self._close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class PeerResponse:
    """A node's answer: status, headers (names lowercased, in order) and its body, whole
    (`body`) or as it comes (`chunks`, for streams). `close` hands the connection back."""

    __slots__ = ("_connection", "_pool", "headers", "status")

    def __init__(self, pool: PeerPool, connection: _Connection) -> None:
        self._pool = pool
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers

    @property
    def complete(self) -> bool:
        """Whether all of the body is here already."""
        return self._connection.done

    def body(self) -> bytes:
        """The whole body of a complete answer."""
        chunks = self._connection.chunks
        if len(chunks) == 1:
            return chunks.popleft()
        whole = b"".join(chunks)
        chunks.clear()
        return whole

    async def read(self) -> bytes:
        """The whole body, once all of it came."""
        connection = self._connection
        connection.stream = False
        if connection.paused and connection.transport is not None:
            connection.paused = False
            connection.transport.resume_reading()
        await connection.arrived()
        return self.body()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they come; raises `PeerError` if the peer breaks off."""
        while (chunk := await self._connection.next_chunk()) is not None:
            yield chunk

    def close(self) -> None:
        self._pool.release(self._connection)


class PeerPool:
    """Keep-alive connections to the other nodes, a bounded pool per node (module doc)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 1.0,
        read_timeout: float = 10.0,
        max_connections: int = 64,
        max_idle: int = 32,
        idle_timeout: float = 4.0,
    ) -> None:
        """`idle_timeout` stays below the peer's own keep-alive timeout (uvicorn's is 5 s),
        so a connection is seldom reused just as the peer closes it."""
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._peers: dict[str, _Peer] = {}
        self._closed = False

    async def request(
        self,
        url: str,
        method: str,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        *,
        stream: bool = False,
        read_timeout: float | None = None,
    ) -> PeerResponse:
        """Send `method target` to the node at `url` (its base URL); its answer once it came
        (`stream`: once its head came; read the rest with `chunks`), within
        `read_timeout` (default: the pool's). Close the answer."""
        peer = self._peers.get(url)
        if peer is None:
            peer = self._peers[url] = _Peer(url)
        head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), target, peer.host_header)]
        head += [b"%s: %s\r\n" % pair for pair in headers]
        if body or method != _RETRIED:
            head.append(b"content-length: %d\r\n" % len(body))
        head += [b"\r\n", body]
        data = b"".join(head)
        timeout = self.read_timeout if read_timeout is None else read_timeout
        connection, reused = await self._acquire(peer)
        try:
            connection.send(data, stream=stream, timeout=timeout)
            await connection.arrived()
        except PeerError:
            stale = reused and not connection.received and not connection.timed_out
            self.release(connection)
            if not (stale and method == _RETRIED):
                raise
            connection, _ = await self._acquire(peer, fresh=True)
            try:  # the peer closed an idle connection just as it was reused: once more
                connection.send(data, stream=stream, timeout=timeout)
                await connection.arrived()
            except BaseException:
                self.release(connection)
                raise
        except BaseException:  # cancelled: the connection's state is unknown
            connection._close()
            self.release(connection)
            raise
        return PeerResponse(self, connection)

    async def _acquire(self, peer: _Peer, *, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection to `peer`: an idle one (reused) or a new one, within the bounds."""
        deadline = None
        while True:
            while peer.idle and not fresh:
                connection, since = peer.idle.pop()
                if not connection.closed and time.monotonic() - since < self.idle_timeout:
                    return connection, True
                connection._close()
                peer.open -= 1
            if peer.open < self.max_connections:
                return await self._connect(peer), False
            if fresh and peer.idle:  # full, but an idle one can make room
                connection, _ = peer.idle.popleft()
                connection._close()
                peer.open -= 1
                continue
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.connect_timeout
            waiter = loop.create_future()
            peer.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise PeerError(
                    f"all {self.max_connections} connections to {peer.url} stayed busy for "
                    f"{self.connect_timeout:g} s"
                ) from None
            finally:
                if waiter in peer.waiters:
                    peer.waiters.remove(waiter)

    async def _connect(self, peer: _Peer) -> _Connection:
        peer.open += 1
        loop = asyncio.get_running_loop()
        host, port = peer.address
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(peer), host, port, ssl=peer.ssl
                )
        except TimeoutError:
            self._opened_none(peer)
            raise PeerError(
                f"{peer.url} did not accept a connection within {self.connect_timeout:g} s"
            ) from None
        except OSError as error:
            self._opened_none(peer)
            raise PeerError(f"{peer.url} refused the connection ({error})") from None
        except BaseException:
            self._opened_none(peer)
            raise
        return connection

    def _opened_none(self, peer: _Peer) -> None:
        peer.open -= 1
        self._wake_one(peer)

    def release(self, connection: _Connection) -> None:
        """Back to the idle connections if it can carry another request, else closed."""
        if not connection.busy:
            return
        connection.busy = False
        connection._cancel_timer()
        peer = connection.peer
        if not self._closed and connection.reusable() and len(peer.idle) < self.max_idle:
            peer.idle.append((connection, time.monotonic()))
        else:
            connection._close()
            peer.open -= 1
        self._wake_one(peer)

    @staticmethod
    def _wake_one(peer: _Peer) -> None:
        while peer.waiters:
            waiter = peer.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close the idle connections; those in use close when their answer is done."""
        self._closed = True
        for peer in self._peers.values():
            while peer.idle:
                connection, _ = peer.idle.pop()
                connection._close()
                peer.open -= 1
