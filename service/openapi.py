"""The OpenAPI document at /openapi.json, and the /docs and /redoc pages that read it, offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: on a machine without internet /docs was
blank. Their bundles come from the `fastapi-offline` package here and are served under /docs-assets.

The document says, per operation, what its 200 answer looks like (service.schemas; routers build
dicts, so FastAPI alone documents `{}`) and which error statuses it can answer (`OPERATIONS`, one
table). It describes this server: with FREEBIND_API_KEYS set, every operation but the health routes
takes the bearer key (and may answer 401); without keys there is no security scheme to document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service import schemas
from service.errors import PROBLEM_JSON

ASSETS_URL = "/docs-assets"
FAVICON_URL = "/favicon.svg"
PUBLIC = {"/health/live", "/health/ready"}  # no key needed (service.app includes them without the dependency)

# Statuses any operation may answer, and what the body routes add: unreadable JSON (400), the body
# limit (413), a request that fails its schema (422), models still loading (503).
ANY = (500,)
BODY = (400, 413, 422, 503)
MEDIA = (413, 415, 429)  # inputs that are decoded and encoded: media types, sizes, admission
# (method, path) -> (the 200 answer's model, error statuses beyond ANY and the 401 of a keyed server). One row per
# operation: a test checks that every operation of the app has one, so a new route cannot go undocumented.
# operations that use the collection store: 501 on a server that keeps no collections (FREEBIND_COLLECTIONS)
STORED = {("post", "/embed"), ("post", "/collections"), ("get", "/collections"), ("get", "/collections/{name}"),
          ("delete", "/collections/{name}"), ("post", "/collections/{name}/items"),
          ("get", "/collections/{name}/items/{item_id}"), ("delete", "/collections/{name}/items/{item_id}"),
          ("post", "/search")}
OPERATIONS: dict[tuple[str, str], tuple[type[BaseModel] | None, tuple[int, ...]]] = {
    ("post", "/embed"): (schemas.EmbedResponse, (*BODY, *MEDIA, 404, 409)),
    ("post", "/embed/upload"): (schemas.EmbedResponse, (*BODY, *MEDIA, 404)),
    ("post", "/v1/embeddings"): (schemas.OpenAIEmbeddingsResponse, (*BODY, *MEDIA, 404)),
    ("get", "/v1/models"): (schemas.OpenAIModelList, (503,)),
    ("get", "/spaces"): (schemas.SpaceList, (503,)),
    ("get", "/spaces/{name}"): (schemas.SpaceInfo, (404, 503)),
    ("post", "/collections"): (schemas.CollectionInfo, (*BODY, 404, 409)),
    ("get", "/collections"): (schemas.CollectionList, ()),
    ("get", "/collections/{name}"): (schemas.CollectionInfo, (404,)),
    ("delete", "/collections/{name}"): (schemas.Deleted, (404,)),
    ("post", "/collections/{name}/items"): (schemas.Upserted, (*BODY, *MEDIA, 404, 409)),
    ("get", "/collections/{name}/items/{item_id}"): (schemas.StoredItem, (404,)),
    ("delete", "/collections/{name}/items/{item_id}"): (schemas.Deleted, (404,)),
    ("post", "/search"): (schemas.SearchResponse, (*BODY, *MEDIA, 404, 409)),
    ("post", "/classify"): (schemas.ClassifyResponse, (*BODY, *MEDIA, 404)),
    ("get", "/labelsets"): (schemas.LabelSetList, ()),
    ("get", "/metrics"): (None, ()),
    ("get", "/health/live"): (schemas.Health, (503,)),
    ("get", "/health/ready"): (schemas.Health, (503,)),
}


def install_docs(app: FastAPI) -> None:
    """/docs, /redoc and their assets from the installed package, and the document built by `openapi`.
    The app is made with docs_url=None and redoc_url=None (FastAPI's pages would point at a CDN)."""
    import fastapi_offline

    app.mount(ASSETS_URL, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets")
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} API",
                                   swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{FAVICON_URL}",
                                   swagger_ui_parameters={"persistAuthorization": True})

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} API",
                              redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{FAVICON_URL}", with_google_fonts=False)


def openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with our answers, errors and security filled in; built once per app."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = document.setdefault("components", {})
        keyed = bool(app.state.settings.api_keys)
        stored = app.state.settings.collections
        if keyed:
            components.setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer", "description": "one of the server's FREEBIND_API_KEYS"}
        models = [m for m, _ in OPERATIONS.values() if m is not None] + [schemas.Problem]
        _, top = models_json_schema([(m, "serialization") for m in models], ref_template="#/components/schemas/{model}")
        components.setdefault("schemas", {}).update(top.get("$defs", {}))
        for path, methods in document.get("paths", {}).items():
            for method, operation in methods.items():
                _document(method, path, operation, keyed, stored)
        app.openapi_schema = document
    return app.openapi_schema


def _document(method: str, path: str, operation: dict[str, Any], keyed: bool, stored: bool) -> None:
    model, errors = OPERATIONS.get((method, path), (None, ()))
    responses = operation.setdefault("responses", {})
    success = next((code for code in responses if code.startswith("2")), "200")
    if model is not None:
        responses[success] = {"description": responses.get(success, {}).get("description", "Successful Response"),
                              "content": {"application/json": {"schema": _ref(model)}}}
    for code in [c for c in responses if not c.startswith("2")]:
        del responses[code]  # FastAPI's own 422 (HTTPValidationError) is not what the service answers
    guarded = keyed and path not in PUBLIC
    off = not stored and (method, path) in STORED
    statuses = sorted(set(errors) | set(ANY) | ({401} if guarded else set()) | ({501} if off else set()))
    for status in statuses:
        if path in PUBLIC and status == 503:
            responses["503"] = {"description": "not alive / not ready", "content": {"application/json": {
                "schema": _ref(schemas.Health)}}}
            continue
        responses[str(status)] = {"description": _reason(status),
                                  "content": {PROBLEM_JSON: {"schema": _ref(schemas.Problem)}}}
    if guarded:
        operation["security"] = [{"bearer": []}]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _reason(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase
