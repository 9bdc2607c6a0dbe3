"""Plain ASGI middleware: request ids + the last-resort 500, cancelling the work of a client that left, the
API key, and the request body limit.

Plain ASGI (not `BaseHTTPMiddleware`) so bodies stream through untouched and an exception raised
inside the app reaches us as itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import require_api_key
from service.errors import PayloadTooLarge, Unauthorized, freebind_error_handler, http_error_handler, internal_error
from service.metrics import Metrics

log = logging.getLogger("freebind.service")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CLIENT_GONE = 499  # nginx's status for a client that left before its answer: counted and logged, never sent


class RequestContext:
    """Gives every request an id (the client's `X-Request-ID` when sane), echoes it in the response,
    times the request per route, and turns any unhandled exception into a 500 that names only the id;
    the traceback goes to the log."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _CLIENT_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status, sent, started = 500, False, time.perf_counter()
        as_received = dict(scope)  # routing rewrites root_path for mounts; matching again needs the original

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status, sent = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("request %s %s %s failed", rid, scope["method"], scope["path"], exc_info=exc)
            self.metrics.errors.labels("internal").inc()
            if not sent:  # a response already started cannot be replaced
                await internal_error(scope)(scope, receive, send)
        finally:
            route = route_label(scope, as_received)
            if scope["state"].get("client_gone"):
                status = CLIENT_GONE
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.request_seconds.labels(scope["method"], route).observe(time.perf_counter() - started)


class CancelOnDisconnect:
    """Cancels a request's work when its client disconnects before the answer. /classify with a new
    mixing kept embedding imagenet1k's 4 983 descriptions for ~2.5 min after its client had given up,
    and every /embed waited behind them. Once the body has been read, a watcher listens for
    `http.disconnect` and cancels the handler: awaits on batchers end at once (their queued items are
    dropped unencoded), a thread already running finishes first, the request's admission is given back.
    Nothing is cancelled once the answer has gone out. A handler that never reads its body (a GET) is not
    watched: listening would take its body from it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_read, gone, answered = asyncio.Event(), asyncio.Event(), False

        async def receive_body() -> Message:
            if body_read.is_set():  # asked again (Starlette's is_disconnected): the watcher holds the channel
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def send_answer(message: Message) -> None:
            nonlocal answered
            answered = answered or (message["type"] == "http.response.body" and not message.get("more_body", False))
            await send(message)

        async def watch(work: asyncio.Task) -> None:
            await body_read.wait()
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # noqa: BLE001 - a server that cannot tell us: nothing to cancel on
                return
            gone.set()
            if not answered:
                scope["state"]["client_gone"] = True
                work.cancel()

        work = asyncio.ensure_future(self.app(scope, receive_body, send_answer))
        watcher = asyncio.create_task(watch(work))
        try:
            await work
        except asyncio.CancelledError:
            if not scope["state"].get("client_gone"):  # this task itself was cancelled (shutdown): so is the work
                work.cancel()
                raise
            log.info("request %s %s %s: the client left; its work was cancelled", scope["state"].get("request_id"),
                     scope["method"], scope["path"])
        finally:
            watcher.cancel()


class KeyFirst:
    """The API key of every path but `public` ones (and those under `public_prefixes`), checked before
    anything reads the body. As a route dependency it ran only after FastAPI had parsed the JSON body:
    a caller without a key could make the server parse 30 MB and read its validation errors. Unknown
    paths need the key too, so they do not tell such a caller which routes exist."""

    def __init__(self, app: ASGIApp, public: frozenset[str], public_prefixes: tuple[str, ...]):
        self.app, self.public, self.public_prefixes = app, public, public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path not in self.public and not path.startswith(self.public_prefixes):
            request = Request(scope)
            try:
                await require_api_key(request)
            except Unauthorized as exc:
                return await (await freebind_error_handler(request, exc))(scope, receive, send)
        await self.app(scope, receive, send)
def route_label(scope: Scope, as_received: Scope) -> str:
    """The route template a request matched (its `route` when FastAPI set one, else the app's route or
    mount that matches: /openapi.json, /static/..., /docs-assets/...); "unmatched" only for what matched none."""
    route = scope.get("route")
    if route is not None:
        return route.path
    for candidate in getattr(scope.get("app"), "routes", ()):
        if candidate.matches(as_received)[0] == Match.FULL:
            return getattr(candidate, "path", "unmatched")
    return "unmatched"


class BodyLimit:
    """413 for bodies over `max_bytes`: at once from `Content-Length`, else while counting streamed
    chunks, before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = await http_error_handler(Request(scope), PayloadTooLarge(self.max_bytes))
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)  # FastAPI passes HTTPExceptions on to our handler
            return message

        await self.app(scope, counted, send)
