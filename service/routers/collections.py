"""/collections: create, list, describe and delete collections; add, fetch and delete their items.

An item is stored as its *components* (leaf vectors and their Gram matrix, `Space.components`), so
/search can score it under any mixing without re-embedding it. Items are encoded before the store is
touched: a slow encode never holds a collection's lock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from bonds.enhance import blend
from bonds.errors import DimensionError
from bonds.mixing import ResolvedMixing
from bonds.plan import Node
from bonds.remix import remix_vectors
from bonds.space import Space
from service.deps import EngineDep, MetricsDep, SettingsDep, StoreDep, TicketDep
from service.engine import VECTOR, Engine, unit_vector
from service.errors import InvalidInput
from service.index import (
    RAW_PLAN,
    Collection,
    CollectionStore,
    Hit,
    IndexSettings,
    ItemNotFoundError,
    Record,
    SpaceMismatchError,
)
from service.inputs import UnicodeText, check_metadata, decode, json_field, parse_inputs, parse_uploads, upload_type
from service.settings import Settings

router = APIRouter(tags=["collections"])
INPUT_KINDS = ("text", "image", "audio", VECTOR)
MAX_ID = 512  # characters of an item id, from JSON or a multipart file name


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="letters, digits, '_' and '-'")
    space: str | None = Field(None, description="served space the items are embedded in (default: the default space)")
    index: IndexSettings = Field(default_factory=IndexSettings, description="candidate index and search strategy")
    mixing: dict[str, Any] | None = Field(None, description="mixing of the vectors the ANN index holds "
                                          "(searches may use any mixing; this one only steers ANN candidates)")


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UnicodeText = Field(..., min_length=1, max_length=MAX_ID)
    text: str | None = None
    image: str | None = Field(None, description="base64 or data URI")
    audio: str | None = Field(None, description="base64 or data URI")
    vector: list[float] | None = Field(None, description="a vector of the collection's space, stored as it is")
    fingerprint: str | None = Field(None, description="the vector's fingerprint (from /embed): checked against the space")
    metadata: dict[str, Any] = Field(default_factory=dict)

    def input(self) -> dict[str, Any]:
        given = {k: getattr(self, k) for k in INPUT_KINDS if getattr(self, k) is not None}
        if len(given) != 1:
            raise InvalidInput(f"item {self.id!r}: give exactly one of {', '.join(INPUT_KINDS)}")
        return given


class AddItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(..., min_length=1)


# --- shared with /search ------------------------------------------------------------------------------
def open_collection(engine: Engine, store: CollectionStore, name: str) -> tuple[Collection, Space]:
    """The collection and its space, refusing (409) a space whose id changed since the collection was made."""
    collection = store.get(name)
    space = engine.space(collection.meta["space"])
    collection.check_space(space.space_id())
    return collection, space


def pinned(resolved: ResolvedMixing) -> dict[str, Any]:
    """A collection's mixing as stored: every factor and weight spelled out, no preset name, so a later edit
    of the space's defaults or presets cannot change what its stored vectors mean."""
    return {"factors": resolved.factors, "off": sorted(resolved.off), "weights": resolved.weights}


def collection_mixing(collection: Collection, space: Space) -> ResolvedMixing:
    """The mixing of the vectors a collection stores and indexes."""
    return space.resolve(collection.meta["mixing"])


def at_default_mixing(collection: Collection, space: Space, plans: dict[str, Node]) -> bool:
    """Whether `plans` are the collection's default mixing, whose vectors it stores and indexes: a search under
    it scores those vectors directly instead of re-scoring candidates from their components."""
    default = collection_mixing(collection, space)
    return all(plan == space.plan(modality, default) for modality, plan in plans.items())


def enhanced(collection: Collection, plans: dict[str, Node], query_d: np.ndarray, modality: str, k: int, t: float,
             alpha: float, exclude: Sequence[str] = (), indexed: bool = False) -> tuple[np.ndarray, list[Hit]]:
    """ImageBind-LLM's cache model over the collection's `modality` items (bonds.enhance.blend): the query
    pulled toward its k nearest, all under `plans`, and the neighbours used. Its vectors are read after the
    search, so a neighbour deleted in between drops out. Blocking: call it off the event loop."""
    hits = collection.search(plans, query_d, k, None, [modality], exclude, None, indexed)
    if not hits:
        return query_d, []
    values_kd, found = collection.item_vectors(plans, [h.key for h in hits])
    hits = [h for h, kept in zip(hits, found, strict=True) if kept]
    if not hits:
        return query_d, []
    scores_1k = np.array([[h.score for h in hits]])
    return blend(query_d[None, :], scores_1k, values_kd[found][None], t=t, alpha=alpha)[0], hits


def check_vector(space: Space, vector: np.ndarray, fingerprint: str | None, allowed: set[str], what: str) -> np.ndarray:
    """A client's vector: right size, unit-normalised, and (when it says) from this space and mixing."""
    if vector.shape != (space.dim,):
        raise DimensionError(f"{what}: vector has {vector.size} numbers; space {space.name!r} is {space.dim}-d")
    if fingerprint is not None and fingerprint not in allowed:
        raise SpaceMismatchError(f"{what}: fingerprint {fingerprint!r} is not one of this space's under the mixing in "
                                 f"use ({', '.join(sorted(allowed))}); embed it with space {space.name!r} and that mixing")
    return unit_vector(vector, what)


# --- collections ------------------------------------------------------------------------------------
@router.post("/collections", status_code=status.HTTP_201_CREATED)
async def create_collection(body: CreateCollection, engine: EngineDep, store: StoreDep) -> dict[str, Any]:
    if body.index.milvus_uri is not None:  # else any client could make the server open files or dial hosts
        raise InvalidInput("index.milvus_uri: the Milvus collections live in is the operator's choice "
                           "(FREEBIND_MILVUS_URI); a request cannot name one")
    space = engine.space(body.space)
    resolved = space.resolve(body.mixing)  # a bad mixing is refused now, not at the first add
    collection = await run_in_threadpool(store.create, body.name, space.name, space.space_id(), space.dim, body.index,
                                         json.loads(json.dumps(pinned(resolved))))
    info = collection.info()
    info["mixing_resolved"] = resolved.to_dict()
    return info


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
    collection, space = open_collection(engine, store, name)
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
        parsed = await decode(parse_inputs, [item.input() for item in body.items], settings, metrics, ticket)
    records = await _records(engine, collection, space, keys, metadata, fingerprints, parsed)
    count = await run_in_threadpool(collection.upsert, space.space_id(), records)
    return {"collection": name, "upserted": count, "ids": list(dict.fromkeys(keys))}


async def _from_files(request: Request, settings: Settings) -> tuple[list[str], list[dict], list[tuple[str | None, bytes]]]:
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


async def _records(engine: Engine, collection: Collection, space: Space, keys: list[str], metadata: list[dict],
                   fingerprints: list[str | None], parsed: list[tuple[str, Any]]) -> list[Record]:
    """Components per modality (one batched call each) plus each item's vector under the default mixing."""
    default = collection_mixing(collection, space)
    records: list[Record | None] = [None] * len(keys)
    by_modality: dict[str, list[int]] = {}
    for i, (modality, _) in enumerate(parsed):
        by_modality.setdefault(modality, []).append(i)
    for modality, where in by_modality.items():
        if modality == VECTOR:
            allowed = {space.fingerprint(default)}
            for i in where:
                v = check_vector(space, parsed[i][1], fingerprints[i], allowed, f"item {keys[i]!r}")
                records[i] = Record(keys[i], VECTOR, metadata[i], [RAW_PLAN.key], v[None, :], np.ones((1, 1)), v)
            continue
        components = await engine.components(space, modality, [parsed[i][1] for i in where], default)
        vectors = remix_vectors(space.plan(modality, default), components.keys, components.leaves, components.gram)
        for n, i in enumerate(where):
            records[i] = Record(keys[i], modality, with_note(metadata[i], components.notes[n]), components.keys,
                                components.leaves[n], components.gram[n], vectors[n])
    return [r for r in records if r is not None]


def with_note(metadata: dict[str, Any], note: str | None) -> dict[str, Any]:
    """An item's metadata with what its encoder noticed (e.g. "no speech detected") as `note`, so searches
    show that its vector says little; a `note` the client set wins."""
    return {**metadata, "note": note} if note and "note" not in metadata else metadata


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
