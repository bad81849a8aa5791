"""A node forwards a run's request to the node that owns it (a real server on 127.0.0.1)
and passes its answer back; an owner that does not answer properly is a 503 with
Retry-After, never another 5xx."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from behest.cluster.membership import Membership, view_of
from behest.cluster.ownership import Ownership
from behest.cluster.routing import Router
from behest.config import Settings
from tests.unit.peer_server import Server, answer

HERE = "http://127.0.0.1:1"
RUN = str(uuid.UUID(int=7))

Node = Callable[[str, str], Awaitable[httpx.Response]]
"""GET a path of a node (this one) whose runs all belong to the node at the given URL."""


async def _not_here(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("a run another node owns was answered here")


def _router(owner: str) -> Router:
    group = Membership(Settings(), "g")  # not started: its view as the test sets it
    group._view = view_of([(f"behest-node {owner}", [0, 1]), (f"behest-node {HERE}", [])], 2)
    ownership = Ownership(HERE, group, dict, frozenset)
    return Router(
        _not_here,
        url=HERE,
        membership=group,
        ownership=ownership,
        connect_timeout=0.3,
        read_timeout=0.3,
    )


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    routers: list[Router] = []

    async def call(owner: str, path: str) -> httpx.Response:
        router = _router(owner)
        routers.append(router)
        transport = httpx.ASGITransport(app=router)
        async with httpx.AsyncClient(transport=transport, base_url=HERE) as http:
            return await http.get(path)

    yield call
    for router in routers:
        router._pool.close()
    await asyncio.sleep(0)


async def test_the_owners_answer_is_passed_back(node: Node) -> None:
    server: Server

    async def owner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            request = await server.request(reader)
            found = b"GET /runs/" + RUN.encode() + b"?at_sequence=3 " in request
            body = b'{"run_id":"%s"}' % RUN.encode() if found else b'{"error":"no such run"}'
            status = b"200 OK" if found else b"404 Not Found"
            writer.write(answer(body, status, b"x-behest-node: B\r\nserver: owner\r\n"))

    async with Server(owner) as server:
        response = await node(server.url, f"/runs/{RUN}?at_sequence=3")
        assert response.status_code == 200
        assert response.json() == {"run_id": RUN}
        assert response.headers["x-behest-node"] == "B"
        assert response.headers["content-type"] == "application/json"
        assert "server" not in response.headers  # the owner's own, not passed on
        forwarded = server.requests[0].lower()
        assert b"x-behest-scope: local\r\n" in forwarded
        assert b"x-behest-forwarded-by: " + HERE.encode() in forwarded

        other = str(uuid.UUID(int=8))
        missing = await node(server.url, f"/runs/{other}")
        assert (missing.status_code, missing.json()) == (404, {"error": "no such run"})


async def test_a_watch_is_passed_back_as_it_comes(node: Node) -> None:
    server: Server

    async def owner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n")
        for message in (b"retry: 1000\n\n", b"event: state\ndata: {}\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(message), message))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    async with Server(owner) as server:
        response = await node(server.url, f"/runs/{RUN}/watch")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.content == b"retry: 1000\n\nevent: state\ndata: {}\n\n"


@pytest.mark.parametrize("owner_does", ["refuse", "stay silent", "answer garbage", "hang up"])
async def test_an_owner_that_does_not_answer_is_a_503_with_retry_after(
    node: Node, owner_does: str
) -> None:
    server: Server

    async def owner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await server.request(reader)
        if owner_does == "answer garbage":
            writer.write(b"HTTP/1.1 2000 Fine\r\n\r\n")
        elif owner_does == "stay silent":
            await reader.read()

    async with Server(owner) as server:
        url = server.url
        if owner_does == "refuse":
            assert server.server is not None
            server.server.close()
            await server.server.wait_closed()
        started = asyncio.get_running_loop().time()
        response = await node(url, f"/runs/{RUN}")
        assert asyncio.get_running_loop().time() - started < 2
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = orjson.loads(response.content)["error"]
    assert f"{url} does not answer for it" in error, error
