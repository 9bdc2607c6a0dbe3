"""Collection requests of a replicated deployment, sent on to the one replica that keeps the collections.

A collection store belongs to one process; Ray's proxy sends each request to any replica. So every
replica passes the requests that touch collections (/collections..., /search, and /embed with an
`enhance`) whole to the collections owner (a one-replica deployment, through its Ray handle), which
answers them with the same app, and hands its answer back unchanged. Everything else is answered
where it arrives, so the embedding work still spreads over the replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Forwarded:
    """An HTTP request or answer as it travels between replicas (plain data: Ray pickles it)."""

    status: int = 0
    method: str = ""
    path: str = ""
    query_string: bytes = b""
    headers: list[tuple[bytes, bytes]] | None = None
    body: bytes = b""


def touches_collections(path: str, body: bytes | None = None) -> bool:
    """Whether a request needs the collection store (`body`: /embed's, to see an `enhance`)."""
    if path == "/collections" or path.startswith("/collections/") or path == "/search":
        return True
    return path == "/embed" and body is not None and b'"enhance"' in body


class ForwardCollections:
    """ASGI middleware around a replica's app: collection requests go to `owner(request) -> answer`."""

    def __init__(self, app: ASGIApp, owner: Callable[[Forwarded], Awaitable[Forwarded]], max_body_bytes: int,
                 replica: str = ""):
        self.app, self.owner, self.max_body_bytes, self.replica = app, owner, max_body_bytes, replica

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (touches_collections(path) or path == "/embed"):
            return await self.app(scope, receive, send)
        body = await _read(receive, self.max_body_bytes + 1)  # past the limit: the owner's app says 413
        if not touches_collections(path, body):
            return await self.app(scope, _replay(body), send)  # an /embed without enhance: answered here
        answer = await self.owner(Forwarded(method=scope["method"], path=path,
                                            query_string=scope.get("query_string", b""),
                                            headers=list(scope.get("headers", [])), body=body))
        headers = [*(answer.headers or []), (b"x-freebind-forwarded-by", self.replica.encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


async def answer_with(app: ASGIApp, request: Forwarded) -> Forwarded:
    """`request` run through `app` in this process (the owner's side), its answer collected whole."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
             "scheme": "http", "path": request.path, "raw_path": request.path.encode(), "root_path": "",
             "query_string": request.query_string, "headers": request.headers or [], "client": None, "server": None}
    answer = Forwarded()
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status, answer.headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, _replay(request.body), send)
    answer.body = b"".join(chunks)
    return answer


async def _read(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size >= limit or not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    """A receive that gives `body` once, then waits as a connected client does."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive
