"""Plain ASGI middleware: request ids + the last-resort 500, and the request body limit.

Plain ASGI (not `BaseHTTPMiddleware`) so bodies stream through untouched and an exception raised
inside the app reaches us as itself.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, http_error_handler, internal_error
from service.metrics import Metrics

log = logging.getLogger("freebind.service")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


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
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.request_seconds.labels(scope["method"], route).observe(time.perf_counter() - started)


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
