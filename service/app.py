"""`create_app(settings)`: the FastAPI app, built from settings it is given (nothing read at import).

State on `app.state`: `settings`, `metrics` (this app's Prometheus registry), `engine` (spaces and
batchers; loads in the background once the lifespan starts), `admission` (the budgets requests reserve
their estimated cost from, and the URL fetch threads) and `store` (collections; opened at
start-up, closed at shutdown). Every path but health, the playground and the API's own documentation
needs the API key when keys are configured, checked before the body is read (service.middleware.KeyFirst).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import torch
from fastapi import FastAPI
from fastapi.responses import FileResponse

from bonds.version import library_version
from service.admission import Admission
from service.collections_off import NoCollections
from service.engine import Engine
from service.errors import install_error_handlers
from service.index.store import CollectionStore
from service.metrics import Metrics
from service.middleware import BodyLimit, CancelOnDisconnect, KeyFirst, RequestContext
from service.openapi import ASSETS_URL, FAVICON_URL, install_docs
from service.playground import STATIC, install_playground
from service.routers import classify, collections, embed, health, metrics, openai, search, spaces
from service.settings import Settings, get_settings

log = logging.getLogger("freebind.service")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.started_at = time.time()  # /v1/models' `created`
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)  # threads started from now on (the models') take it up
    if settings.collections:
        store = CollectionStore(settings.data_dir, milvus_uri=settings.milvus_uri,
                                milvus_token=settings.milvus_token.get_secret_value())
    else:
        store = NoCollections()
    await anyio.to_thread.run_sync(store.open)
    app.state.store = store
    await app.state.engine.start()  # returns at once: spaces load and warm up in the background
    try:
        yield
    finally:
        await app.state.engine.stop()
        app.state.admission.close()
        await anyio.to_thread.run_sync(store.close)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="FreeBind", version=library_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Multimodal embedding spaces with bonded experts, mixed per request. "
                              "The user's guide: docs/guide.md in the repository.")
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.engine = Engine(settings, app.state.metrics)
    app.state.admission = Admission(settings, app.state.metrics)
    install_error_handlers(app)

    app.include_router(health.router)
    for module in (embed, openai, spaces, collections, search, classify, metrics):
        app.include_router(module.router)
    install_docs(app)
    # what needs no key: health, the API's documentation and its assets, the favicon, the playground's page
    public = {route.path for route in health.router.routes}
    public |= {p for p in (app.openapi_url, "/docs", "/redoc", FAVICON_URL, "/favicon.ico") if p}
    public_prefixes = (f"{ASSETS_URL}/",)

    @app.get(FAVICON_URL, include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)  # what browsers ask for when a page names none
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    if settings.playground and (STATIC / "index.html").is_file():
        install_playground(app)  # the page asks for a key itself
        public.add("/")
        public_prefixes += ("/static/", "/playground/")
    # Added innermost first: RequestContext wraps everything, so even a 401 or 413 carries a request id.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(KeyFirst, public=frozenset(public), public_prefixes=public_prefixes)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(RequestContext, metrics=app.state.metrics)
    return app

