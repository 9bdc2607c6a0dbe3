"""What the collection routes do, apart from HTTP: creating a collection, turning inputs into stored
records, building a search's query vector, searching, and the cache enhancement of /search and /embed.

Routers parse a request, call one of these and let service.errors map what they raise. An item is stored
as its *components* (leaf vectors and their Gram matrix, `Space.components`), so /search can score it
under any mixing without re-embedding it. Items are encoded before the store is touched: a slow encode
never holds a collection's lock. Under the collection's own default mixing nothing needs re-scoring:
its vectors are stored and indexed (`Collection.is_default_mixing`). `enhance` first pulls the query
toward the collection's items of one modality (ImageBind-LLM's cache model, `bonds.enhance`), with the
bank re-mixed under the same mixing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bonds.enhance import DEFAULT_ALPHA, DEFAULT_K, DEFAULT_T, blend
from bonds.errors import DimensionError, ModalityError
from bonds.mixing import Mixing, ResolvedMixing
from bonds.plan import RAW_PLAN, VECTOR, Node
from bonds.remix import remix_vectors
from bonds.space import Space
from service.engine import Embedded, Engine, unit_vector
from service.errors import InvalidInput
from service.index import (
    Collection,
    CollectionStore,
    Hit,
    IndexSettings,
    ItemNotFoundError,
    Record,
    SpaceMismatchError,
)
from service.index.search import plan_for

INPUT_KINDS = ("text", "image", "audio", VECTOR)
QUERY_KINDS = (*INPUT_KINDS, "id")
Decode = Callable[[list[dict[str, Any]]], Awaitable[list[tuple[str, Any]]]]  # the router's admitted decoding


class Enhance(BaseModel):
    """Cache enhancement: the query pulled toward its k nearest items of one modality of a collection."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="/embed: the collection whose items pull the queries toward "
                                   "them (required there); /search uses the searched collection")
    k: int = Field(DEFAULT_K, ge=1, le=100, description="neighbours in the cache, per query")
    t: float = Field(DEFAULT_T, ge=0, le=100, description="softmax scale over neighbour scores (0: uniform)")
    alpha: float = Field(DEFAULT_ALPHA, ge=0, le=1, description="weight of the cache prototype (0: no change)")
    modality: str = Field("image", description="the collection's items of this modality form the cache")
    return_neighbours: bool = Field(False, description="/search: list the neighbours used")


def exactly_one(given: BaseModel, kinds: Sequence[str], what: str) -> dict[str, Any]:
    """The one input of `kinds` that `given` sets, as `{kind: value}`; anything else is an InvalidInput."""
    found = {k: getattr(given, k) for k in kinds if getattr(given, k, None) is not None}
    if len(found) != 1:
        raise InvalidInput(f"{what}: give exactly one of {', '.join(kinds)}")
    return found


def open_collection(engine: Engine, store: CollectionStore, name: str) -> tuple[Collection, Space]:
    """The collection and its space, refusing (409) a space whose id changed since the collection was made."""
    collection = store.get(name)
    space = engine.space(collection.meta["space"])
    collection.check_space(space.space_id())
    return collection, space


def check_vector(space: Space, vector: np.ndarray, fingerprint: str | None, allowed: set[str], what: str) -> np.ndarray:
    """A client's vector: right size, unit-normalised, and (when it says) from this space and mixing."""
    if vector.shape != (space.dim,):
        raise DimensionError(f"{what}: vector has {vector.size} numbers; space {space.name!r} is {space.dim}-d")
    if fingerprint is not None and fingerprint not in allowed:
        raise SpaceMismatchError(f"{what}: fingerprint {fingerprint!r} is not one of this space's under the mixing "
                                 f"in use ({', '.join(sorted(allowed))}); embed it with space {space.name!r} and "
                                 "that mixing")
    return unit_vector(vector, what)


# --- /collections ---------------------------------------------------------------------------------------
async def create(engine: Engine, store: CollectionStore, name: str, space_name: str | None, index: IndexSettings,
                 mixing: Mixing | None) -> dict[str, Any]:
    """A new collection in a served space, its mixing pinned; its description with the mixing as resolved."""
    if index.milvus_uri is not None:  # else any client could make the server open files or dial hosts
        raise InvalidInput("index.milvus_uri: the Milvus collections live in is the operator's choice "
                           "(FREEBIND_MILVUS_URI); a request cannot name one")
    space = engine.space(space_name)
    resolved = space.resolve(mixing)  # a bad mixing is refused now, not at the first add
    collection = await run_in_threadpool(store.create, name, space.name, space.space_id(), space.dim, index,
                                         json.loads(json.dumps(pinned(resolved))))
    return {**collection.info(), "mixing_resolved": resolved.to_dict()}


def pinned(resolved: ResolvedMixing) -> dict[str, Any]:
    """A collection's mixing as stored: every factor and weight spelled out, no preset name, so a later edit
    of the space's defaults or presets cannot change what its stored vectors mean."""
    return {"factors": resolved.factors, "off": sorted(resolved.off), "weights": resolved.weights}


async def add(engine: Engine, collection: Collection, space: Space, keys: list[str], metadata: list[dict],
              fingerprints: list[str | None], parsed: list[tuple[str, Any]]) -> int:
    """Encode and store decoded inputs (or replace them, by key); returns how many were stored."""
    records = await _records(engine, collection, space, keys, metadata, fingerprints, parsed)
    return await run_in_threadpool(collection.upsert, space.space_id(), records)


async def _records(engine: Engine, collection: Collection, space: Space, keys: list[str], metadata: list[dict],
                   fingerprints: list[str | None], parsed: list[tuple[str, Any]]) -> list[Record]:
    """Components per modality (one batched call each) plus each item's vector under the default mixing."""
    default = collection.default_mixing(space)
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


# --- /search ----------------------------------------------------------------------------------------------
async def search(engine: Engine, store: CollectionStore, name: str, query: BaseModel, decode: Decode, *,
                 top_k: int, mixing: Mixing | None, filter_: dict[str, Any] | None, modalities: list[str] | None,
                 enhance: Enhance | None, mode: str | None) -> dict[str, Any]:
    """The top_k items of collection `name` for `query`, all under the request's mixing; `decode(raw)`:
    the router's decoding of inputs, admitted against the request's ticket."""
    collection, space = open_collection(engine, store, name)
    resolved = space.resolve(mixing)
    plans, modalities = searched(collection, space, resolved, modalities)
    indexed = collection.is_default_mixing(space, plans)
    query_d, exclude, note = await query_vector(query, engine, collection, space, resolved, plans, decode)
    out: dict[str, Any] = {"query_note": note} if note else {}
    if enhance is not None and enhance.alpha > 0:
        query_d, neighbours = await _enhance_query(enhance, collection, plans, indexed, query_d, exclude)
        if enhance.return_neighbours:
            out["neighbours"] = neighbours
    hits = await run_in_threadpool(collection.search, plans, query_d, top_k, filter_, modalities, exclude, mode,
                                   indexed)
    results = [{"id": h.key, "score": h.score, "modality": h.modality, "metadata": h.metadata} for h in hits]
    return {"results": results, "fingerprint": space.fingerprint(resolved), "mixing": resolved.to_dict(), **out}


def searched(collection: Collection, space: Space, resolved: ResolvedMixing,
             asked: list[str] | None) -> tuple[dict[str, Node], list[str] | None]:
    """Plans for the modalities a search scores, and those modalities (passed on as a filter, so an item
    of another one that an ingest adds while the search runs is never met without a plan).

    A mixing may switch off a bond that is a modality's only route into the space: items of that
    modality cannot be scored under it, which is an error when the collection holds such items and
    the request did not leave them out."""
    valid = [*space.modalities, VECTOR]
    unknown = [m for m in asked or [] if m not in valid]
    if unknown:
        raise InvalidInput(f"modalities: {', '.join(map(repr, unknown))} not embedded by space {space.name!r}; "
                           f"valid: {', '.join(valid)}")
    plans: dict[str, Node] = {}
    for modality in asked or space.modalities:
        if modality == VECTOR:
            continue
        try:
            plans[modality] = space.plan(modality, resolved)
        except ModalityError as exc:
            if asked is not None or collection.meta["groups"].get(modality):
                raise InvalidInput(f"{exc}; the collection holds {modality} items: leave them out with "
                                   f"\"modalities\" or use another mixing") from None
    if asked is None:  # None, not the full list, keeps the search free of a modality filter
        return plans, None if len(plans) == len(space.modalities) else [*plans, VECTOR]
    return plans, asked


async def query_vector(query: BaseModel, engine: Engine, collection: Collection, space: Space,
                       resolved: ResolvedMixing, plans: Mapping[str, Node],
                       decode: Decode) -> tuple[np.ndarray, list[str], str | None]:
    """The query as one unit vector of the space under `resolved`, item ids to leave out of results, and
    what its encoder noticed (e.g. "no speech detected": the results then say little)."""
    given = exactly_one(query, QUERY_KINDS, "query")
    if "id" in given:  # "more like this": the stored item re-mixed, itself left out
        found = await run_in_threadpool(collection.components, given["id"])
        if found is None:
            raise ItemNotFoundError(f"collection {collection.name!r} has no item {given['id']!r}")
        modality, keys, leaves, gram = found
        return remix_vectors(plan_for(plans, modality), keys, leaves, gram)[0], [given["id"]], None
    ((modality, item),) = await decode([given])
    if modality == VECTOR:
        fingerprint = getattr(query, "fingerprint", None)
        return check_vector(space, item, fingerprint, {space.fingerprint(resolved)}, "query"), [], None
    embedding = await engine.embed(space, modality, [item], resolved)
    return embedding.vectors[0], [], embedding.notes[0]


async def _enhance_query(enhance: Enhance, collection: Collection, plans: Mapping[str, Node], indexed: bool,
                         query_d: np.ndarray, exclude: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Cache model over the collection's items of one modality, all under the request's mixing."""
    groups = collection.meta["groups"]
    if enhance.modality not in groups or enhance.modality == VECTOR:
        have = ", ".join(m for m in groups if m != VECTOR) or "(none)"
        raise InvalidInput(f"enhance.modality {enhance.modality!r}: the collection has no such items; it has {have}")
    query_d, hits = await run_in_threadpool(enhanced, collection, plans, query_d, enhance, exclude, indexed)
    return query_d, [{"id": h.key, "score": h.score} for h in hits]


def enhanced(collection: Collection, plans: Mapping[str, Node], query_d: np.ndarray, enhance: Enhance,
             exclude: Sequence[str] = (), indexed: bool = False) -> tuple[np.ndarray, list[Hit]]:
    """ImageBind-LLM's cache model over the collection's `enhance.modality` items (bonds.enhance.blend): the
    query pulled toward its k nearest, all under `plans`, and the neighbours used. Its vectors are read
    after the search, so a neighbour deleted in between drops out. Blocking: call it off the event loop."""
    hits = collection.search(plans, query_d, enhance.k, None, [enhance.modality], exclude, None, indexed)
    if not hits:
        return query_d, []
    values_kd, found = collection.item_vectors(plans, [h.key for h in hits])
    hits = [h for h, kept in zip(hits, found, strict=True) if kept]
    if not hits:
        return query_d, []
    scores_1k = np.array([[h.score for h in hits]])
    return blend(query_d[None, :], scores_1k, values_kd[found][None], t=enhance.t, alpha=enhance.alpha)[0], hits


# --- /embed's enhance -----------------------------------------------------------------------------------
def enhance_embedded(store: CollectionStore, engine: Engine, result: Embedded, enhance: Enhance) -> np.ndarray:
    """Each of an /embed request's vectors blended with its k nearest collection items, all under the
    request's mixing (`enhance.collection` set: the router's request model requires it). Blocking: call it
    off the event loop."""
    collection, space = open_collection(engine, store, enhance.collection)
    if space is not result.space:
        raise SpaceMismatchError(f"collection {enhance.collection!r} holds space {space.name!r}, "
                                 f"but these inputs were embedded in {result.space.name!r}")
    plans = {m: space.plan(m, result.mixing) for m in collection.meta["groups"] if m != VECTOR}
    if enhance.modality not in plans:
        raise InvalidInput(f"enhance.modality {enhance.modality!r}: collection {enhance.collection!r} has no such "
                           f"items; it has {', '.join(plans) or '(none)'}")
    out = result.vectors.copy()
    indexed = collection.is_default_mixing(space, plans)
    for i, query_d in enumerate(result.vectors):
        out[i], _ = enhanced(collection, plans, query_d, enhance, indexed=indexed)
    return out
