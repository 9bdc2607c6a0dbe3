"""Dependencies the routers declare: the app's settings, engine, store and metrics; and the API key check
(run by service.middleware.KeyFirst, before the body is read).

Everything hangs off `request.app.state` (set in `create_app` and its lifespan), never off module
globals, so each app built by `create_app(settings)` is independent.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request

from service.admission import Ticket
from service.engine import Engine
from service.errors import Unauthorized
from service.metrics import Metrics
from service.settings import Settings


# `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, one thread hop per
# dependency per request, for what is an attribute lookup.
async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _engine(request: Request) -> Engine:
    return request.app.state.engine


async def _store(request: Request) -> Any:
    return request.app.state.store


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def _ticket(request: Request) -> AsyncIterator[Ticket]:
    """The request's claim on the server's budgets (service.admission), given back when it ends: answered,
    failed, or cancelled because its client left."""
    ticket = request.app.state.admission.ticket()
    try:
        yield ticket
    finally:
        ticket.release()


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]
StoreDep = Annotated[Any, Depends(_store)]  # service.index.store.CollectionStore
MetricsDep = Annotated[Metrics, Depends(_metrics)]
TicketDep = Annotated[Ticket, Depends(_ticket)]


async def require_api_key(request: Request) -> None:
    """`Authorization: Bearer <key>` against the configured keys, in constant time; no keys: open."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("this server needs an API key: send 'Authorization: Bearer <key>'")
    offered = given.strip().encode()
    matched = False
    for key in keys:  # no early exit: the time taken does not say which key came close
        matched |= hmac.compare_digest(offered, key.get_secret_value().encode())
    if not matched:
        raise Unauthorized("the API key is not valid")
