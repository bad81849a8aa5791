"""The client between nodes against a real tiny server on 127.0.0.1: keep-alive reuse,
a stale connection retried (GETs only), timeouts, broken and malformed answers, the bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from behest.cluster.peers import PeerError, PeerPool
from tests.unit.peer_server import Server, answer


@pytest.fixture
async def pool() -> AsyncIterator[PeerPool]:
    peers = PeerPool(connect_timeout=0.5, read_timeout=0.5)
    yield peers
    peers.close()
    await asyncio.sleep(0)  # let the transports finish closing


async def test_requests_reuse_one_kept_alive_connection(pool: PeerPool) -> None:
    server: Server

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            request = await server.request(reader)
            writer.write(answer(request.split(b" ")[1], extra=b"x-behest-node: b\r\n"))

    async with Server(echo) as server:
        for n in range(5):
            response = await pool.request(
                server.url, "GET", b"/runs/%d?x=1" % n, [(b"x-behest-scope", b"local")]
            )
            assert response.status == 200
            assert response.complete
            assert response.body() == b"/runs/%d?x=1" % n
            assert (b"x-behest-node", b"b") in response.headers
            response.close()
        assert server.connections == 1
        assert b"x-behest-scope: local\r\n" in server.requests[0]
        assert b"host: 127.0.0.1:" in server.requests[0]


async def test_a_post_carries_its_body(pool: PeerPool) -> None:
    server: Server

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        request = await server.request(reader)
        writer.write(answer(request.split(b"\r\n\r\n", 1)[1]))

    async with Server(echo) as server:
        response = await pool.request(server.url, "POST", b"/runs/batch", body=b'{"a":1}')
        assert await response.read() == b'{"a":1}'
        response.close()


async def test_a_stream_comes_chunk_by_chunk(pool: PeerPool) -> None:
    server: Server
    go_on = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await go_on.wait()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await reader.read()

    async with Server(stream) as server:
        response = await pool.request(server.url, "GET", b"/runs/watch", stream=True)
        assert not response.complete
        pieces = response.chunks()
        assert await anext(pieces) == b"hello"  # before the rest was even written
        go_on.set()
        assert [piece async for piece in pieces] == [b" world"]
        response.close()


async def test_a_get_on_a_connection_the_peer_closed_is_sent_again(pool: PeerPool) -> None:
    server: Server

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.request(reader)
        writer.write(answer(b"{}"))  # keep-alive, as HTTP/1.1 is by default
        await server.request(reader)  # then closes as the next request comes: stale

    async with Server(once) as server:
        (await pool.request(server.url, "GET", b"/runs/a")).close()
        response = await pool.request(server.url, "GET", b"/runs/b")
        assert (response.status, response.body()) == (200, b"{}")
        response.close()
        assert server.connections == 2
        assert len(server.requests) == 3  # /runs/b twice: on the stale connection, then anew

        (await pool.request(server.url, "GET", b"/runs/c")).close()
        with pytest.raises(PeerError, match="closed the connection before answering"):
            await pool.request(server.url, "POST", b"/runs/batch", body=b"{}")  # not retried
        assert server.connections == 3


async def test_a_silent_peer_times_out_without_a_retry(pool: PeerPool) -> None:
    server: Server

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        if n == 1:
            writer.write(answer(b"{}"))
            await server.request(reader)
        await reader.read()

    async with Server(silent) as server:
        (await pool.request(server.url, "GET", b"/runs/a")).close()
        started = asyncio.get_running_loop().time()
        with pytest.raises(PeerError, match=r"did not answer within 0.5 s"):
            await pool.request(server.url, "GET", b"/runs/b")
        assert asyncio.get_running_loop().time() - started < 2
        assert server.connections == 1  # a timeout is not a stale connection: not sent again


async def test_a_refused_connection_says_so(pool: PeerPool) -> None:
    async with Server(lambda r, w, n: asyncio.sleep(0)) as server:
        url = server.url
    with pytest.raises(PeerError, match="refused the connection"):
        await pool.request(url, "GET", b"/runs/a")


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"SMTP ready\r\n\r\n", "not HTTP/1.1"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "not HTTP/1.1"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", "in the middle of its answer"),
        (b"", "closed the connection before answering"),
    ],
)
async def test_a_malformed_or_broken_answer_is_a_clear_error(
    pool: PeerPool, reply: bytes, why: str
) -> None:
    server: Server

    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.request(reader)
        writer.write(reply)
        await writer.drain()

    async with Server(bad) as server:
        with pytest.raises(PeerError, match=why):
            await pool.request(server.url, "GET", b"/runs/a")


async def test_an_answer_ended_by_the_connection_is_whole(pool: PeerPool) -> None:
    server: Server

    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{}")

    async with Server(http10) as server:
        response = await pool.request(server.url, "GET", b"/runs/a")
        assert response.body() == b"{}"
        response.close()
        (await pool.request(server.url, "GET", b"/runs/a")).close()
        assert server.connections == 2  # `connection: close` is not reused


async def test_the_pool_is_bounded_per_peer() -> None:
    server: Server

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await reader.read()

    pool = PeerPool(connect_timeout=0.3, max_connections=1)
    async with Server(held) as server:
        watching = await pool.request(server.url, "GET", b"/runs/watch", stream=True)
        with pytest.raises(PeerError, match=r"all 1 connections to .* stayed busy for 0.3 s"):
            await pool.request(server.url, "GET", b"/runs/a")
        waiting = asyncio.create_task(pool.request(server.url, "GET", b"/runs/b", stream=True))
        await asyncio.sleep(0.05)
        watching.close()  # not complete: closed, which makes room for the one waiting
        (await waiting).close()
        assert server.connections == 2
    pool.close()


def test_a_node_url_must_be_http() -> None:
    pool = PeerPool()
    with pytest.raises(PeerError, match=r"http\(s\)://HOST\[:PORT\]"):
        asyncio.run(pool.request("ftp://node", "GET", b"/"))
