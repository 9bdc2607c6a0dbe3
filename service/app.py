"""`create_app(settings)`: the FastAPI app, built from settings it is given (nothing read at import).

State on `app.state`: `settings`, `metrics` (this app's Prometheus registry), `engine` (spaces and
batchers; loads in the background once the lifespan starts) and `store` (collections; opened at
start-up, closed at shutdown). Every router but health needs the API key when keys are configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import torch
from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse

from bonds.checkpoint import library_version
from service.collections_off import NoCollections
from service.deps import require_api_key
from service.engine import Engine
from service.errors import install_error_handlers
from service.index.store import CollectionStore
from service.metrics import Metrics
from service.middleware import BodyLimit, RequestContext
from service.openapi import FAVICON_URL, install_docs
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
        await anyio.to_thread.run_sync(store.close)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="FreeBind", version=library_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Multimodal embedding spaces with bonded experts, mixed per request. "
                              "The user's guide: docs/guide.md in the repository.")
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.engine = Engine(settings, app.state.metrics)
    install_error_handlers(app)
    # Added innermost first: RequestContext wraps everything, so even a 413 carries a request id.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=app.state.metrics)

    app.include_router(health.router)
    authed = [Depends(require_api_key)]
    for module in (embed, openai, spaces, collections, search, classify, metrics):
        app.include_router(module.router, dependencies=authed)
    install_docs(app)

    @app.get(FAVICON_URL, include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)  # what browsers ask for when a page names none
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    if settings.playground and (STATIC / "index.html").is_file():
        install_playground(app)

    return app

