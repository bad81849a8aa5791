"""Small ASGI helpers of the router: headers, JSON answers, bodies read and replayed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

__all__ = ["error_body", "header", "read_body", "replay", "send_json"]


def header(scope: Scope, name: str) -> str | None:
    key = name.encode()
    for header, value in scope["headers"]:
        if header == key:
            text: str = value.decode("latin-1")
            return text
    return None


def error_body(message: str, detail: Any = None) -> bytes:
    return orjson.dumps({"error": message, "detail": detail})


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    raw = [
        (b"content-length", b"%d" % len(body)),
        (b"content-type", b"application/json"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
