"""/collections: create, list, describe and delete collections; add, fetch and delete their items.

The routes parse requests (JSON or multipart files) and call service.collections, which holds what a
collection does with them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from bonds.mixing import Mixing
from service import collections
from service.deps import EngineDep, MetricsDep, SettingsDep, StoreDep, TicketDep
from service.errors import InvalidInput
from service.index import IndexSettings, ItemNotFoundError
from service.inputs import UnicodeText, check_metadata, decode, json_field, parse_inputs, parse_uploads, upload_type
from service.settings import Settings

router = APIRouter(tags=["collections"])
MAX_ID = 512  # characters of an item id, from JSON or a multipart file name


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="letters, digits, '_' and '-'")
    space: str | None = Field(None, description="served space the items are embedded in (default: the default space)")
    index: IndexSettings = Field(default_factory=IndexSettings, description="candidate index and search strategy")
    mixing: Mixing | None = Field(None, description="mixing of the vectors the ANN index holds "
                                  "(searches may use any mixing; this one only steers ANN candidates)")


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UnicodeText = Field(..., min_length=1, max_length=MAX_ID)
    text: str | None = None
    image: str | None = Field(None, description="base64 or data URI")
    audio: str | None = Field(None, description="base64 or data URI")
    vector: list[float] | None = Field(None, description="a vector of the collection's space, stored as it is")
    fingerprint: str | None = Field(None,
                                    description="the vector's fingerprint (from /embed): checked against the space")
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(..., min_length=1)


# --- collections ------------------------------------------------------------------------------------
@router.post("/collections", status_code=status.HTTP_201_CREATED)
async def create_collection(body: CreateCollection, engine: EngineDep, store: StoreDep) -> dict[str, Any]:
    return await collections.create(engine, store, body.name, body.space, body.index, body.mixing)


@router.get("/collections")
async def list_collections(store: StoreDep) -> dict[str, Any]:
    return {"collections": await run_in_threadpool(store.list)}


@router.get("/collections/{name}")
async def get_collection(name: str, store: StoreDep) -> dict[str, Any]:
    return store.get(name).info()


@router.delete("/collections/{name}")
async def delete_collection(name: str, store: StoreDep) -> dict[str, Any]:
    await run_in_threadpool(store.drop, name)
    return {"name": name, "deleted": True}


# --- items ------------------------------------------------------------------------------------------
@router.post("/collections/{name}/items", openapi_extra={"requestBody": {"content": {
    "application/json": {"schema": AddItems.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "metadata": {"type": "string", "description": "JSON object: file name -> metadata"}}}}}}})
async def add_items(name: str, request: Request, engine: EngineDep, store: StoreDep, settings: SettingsDep,
                    metrics: MetricsDep, ticket: TicketDep) -> dict[str, Any]:
    """Add or replace items (by id): JSON `{"items": [...]}`, or multipart files (id = file name)."""
    collection, space = collections.open_collection(engine, store, name)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        keys, metadata, uploads = await _from_files(request, settings)
        parsed = await decode(parse_uploads, uploads, settings, metrics, ticket)
        fingerprints: list[str | None] = [None] * len(keys)
    else:
        try:
            body = AddItems.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
        keys = [item.id for item in body.items]
        metadata = [check_metadata(item.metadata, settings, f"item {item.id!r}") for item in body.items]
        fingerprints = [item.fingerprint for item in body.items]
        given = [collections.exactly_one(item, collections.INPUT_KINDS, f"item {item.id!r}") for item in body.items]
        parsed = await decode(parse_inputs, given, settings, metrics, ticket)
    count = await collections.add(engine, collection, space, keys, metadata, fingerprints, parsed)
    return {"collection": name, "upserted": count, "ids": list(dict.fromkeys(keys))}


async def _from_files(request: Request, settings: Settings) -> tuple[list[str], list[dict],
                                                                     list[tuple[str | None, bytes]]]:
    """Multipart `files` (id = file name) as ids, metadata and `(content type, bytes)`; optional `metadata`."""
    form = await request.form()
    files = [f for f in form.getlist("files") if hasattr(f, "read")]
    if not files:
        raise InvalidInput("multipart upload: send the media as one or more 'files' parts")
    by_name = json_field(str(form.get("metadata") or "{}"), "metadata")
    if not isinstance(by_name, dict):
        raise InvalidInput("multipart 'metadata' must be a JSON object: file name -> metadata")
    wrong = [n for n, m in by_name.items() if not isinstance(m, dict)]
    if wrong:
        raise InvalidInput(f"multipart 'metadata' of {wrong[0]!r}: each file's metadata is a JSON object")
    keys = [f.filename or f"file-{i}" for i, f in enumerate(files)]
    long = next((key for key in keys if len(key) > MAX_ID), None)
    if long is not None:  # the file name is the item's id: the same limit as an id sent as JSON
        raise InvalidInput(f"file name {long[:40]!r}... is {len(long)} characters; an item id is at most {MAX_ID}")
    metadata = [check_metadata({"filename": f.filename, **by_name.get(f.filename, {})}, settings, f"file {key!r}")
                for f, key in zip(files, keys, strict=True)]
    return keys, metadata, [(upload_type(f.content_type, f.filename), await f.read()) for f in files]


@router.get("/collections/{name}/items/{item_id:path}")  # ids may hold '/' (file paths)
async def get_item(name: str, item_id: str, store: StoreDep) -> dict[str, Any]:
    found = await run_in_threadpool(store.get(name).get, item_id)
    if found is None:
        raise ItemNotFoundError(f"collection {name!r} has no item {item_id!r}")
    return found


@router.delete("/collections/{name}/items/{item_id:path}")
async def delete_item(name: str, item_id: str, store: StoreDep) -> dict[str, Any]:
    if not await run_in_threadpool(store.get(name).delete, [item_id]):
        raise ItemNotFoundError(f"collection {name!r} has no item {item_id!r}")
    return {"collection": name, "id": item_id, "deleted": True}
