"""/search: the top_k items of a collection for a query, under the request's mixing, with no re-indexing.

The query is embedded under the request's mixing; every stored item is scored from its components
under the same mixing (`bonds.remix`), so a score equals what the item would get if it were embedded
again under that mixing. Small collections (and small filtered sets) are scored exhaustively; large
ones take FAISS candidates and re-score those exactly (the collection's index settings say when).
Under the collection's own default mixing nothing needs re-scoring: its vectors are stored and indexed.
`enhance` first pulls the query toward the collection's items of one modality (ImageBind-LLM's cache
model, `bonds.enhance`), with the bank re-mixed under the same mixing.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bonds.enhance import DEFAULT_ALPHA, DEFAULT_K, DEFAULT_T
from bonds.errors import ModalityError
from bonds.mixing import ResolvedMixing
from bonds.plan import Node
from bonds.remix import remix_vectors
from bonds.space import Space
from service.deps import EngineDep, MetricsDep, SettingsDep, StoreDep, TicketDep
from service.engine import VECTOR, Engine
from service.errors import InvalidInput
from service.index import RAW_MODALITY, Collection, ItemNotFoundError
from service.index.search import plan_for
from service.inputs import UnicodeText, decode, parse_inputs
from service.routers.collections import at_default_mixing, check_vector, enhanced, open_collection

router = APIRouter(tags=["search"])
QUERY_KINDS = ("text", "image", "audio", VECTOR, "id")


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    image: str | None = Field(None, description="base64 or data URI")
    audio: str | None = Field(None, description="base64 or data URI")
    vector: list[float] | None = Field(None, description="a vector of the space under this request's mixing")
    id: UnicodeText | None = Field(None, description="a stored item: its vector under this request's mixing is the query")
    fingerprint: str | None = Field(None, description="of a `vector` query: checked against space and mixing")


class Enhance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(DEFAULT_K, ge=1, le=100, description="neighbours in the cache")
    t: float = Field(DEFAULT_T, ge=0, le=100, description="softmax scale over neighbour scores")
    alpha: float = Field(DEFAULT_ALPHA, ge=0, le=1, description="weight of the cache prototype (0: no change)")
    modality: str = Field("image", description="the collection's items of this modality form the cache")
    return_neighbours: bool = Field(False, description="list the neighbours used")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str
    query: Query
    top_k: int = Field(10, ge=1, le=1000)
    mixing: dict[str, Any] | None = Field(None, description="preset, factors, off, weights; applied at search time")
    filter: dict[str, Any] | None = Field(None, description='metadata conditions: {"k": v}, {"k": {"in": [...]}}, '
                                          '{"k": {"gte": 1, "lt": 5}}; applied before the top_k cut')
    modalities: list[str] | None = Field(None, description="only items of these modalities")
    enhance: Enhance | None = None
    mode: Literal["auto", "exact", "ann"] | None = Field(None, description="override the collection's search mode")


@router.post("/search")
async def search(body: SearchRequest, engine: EngineDep, store: StoreDep, settings: SettingsDep, metrics: MetricsDep,
                 ticket: TicketDep) -> dict[str, Any]:
    collection, space = open_collection(engine, store, body.collection)
    resolved = space.resolve(body.mixing)
    plans, modalities = searched(collection, space, resolved, body.modalities)
    indexed = at_default_mixing(collection, space, plans)
    query, exclude, note = await _query_vector(body.query, engine, collection, space, resolved, plans,
                                               lambda raw: decode(parse_inputs, raw, settings, metrics, ticket))
    out: dict[str, Any] = {"query_note": note} if note else {}
    if body.enhance is not None and body.enhance.alpha > 0:
        query, neighbours = await _enhance(body.enhance, collection, plans, indexed, query, exclude)
        if body.enhance.return_neighbours:
            out["neighbours"] = neighbours
    hits = await run_in_threadpool(collection.search, plans, query, body.top_k, body.filter, modalities,
                                   exclude, body.mode, indexed)
    results = [{"id": h.key, "score": h.score, "modality": h.modality, "metadata": h.metadata} for h in hits]
    return {"results": results, "fingerprint": space.fingerprint(resolved), "mixing": resolved.to_dict(), **out}


def searched(collection: Collection, space: Space, resolved: ResolvedMixing,
             asked: list[str] | None) -> tuple[dict[str, Node], list[str] | None]:
    """Plans for the modalities a search scores, and those modalities (passed on as a filter, so an item
    of another one that an ingest adds while the search runs is never met without a plan).

    A mixing may switch off a bond that is a modality's only route into the space: items of that
    modality cannot be scored under it, which is an error when the collection holds such items and
    the request did not leave them out."""
    valid = [*space.modalities, RAW_MODALITY]
    unknown = [m for m in asked or [] if m not in valid]
    if unknown:
        raise InvalidInput(f"modalities: {', '.join(map(repr, unknown))} not embedded by space {space.name!r}; "
                           f"valid: {', '.join(valid)}")
    plans: dict[str, Node] = {}
    for modality in asked or space.modalities:
        if modality == RAW_MODALITY:
            continue
        try:
            plans[modality] = space.plan(modality, resolved)
        except ModalityError as exc:
            if asked is not None or collection.meta["groups"].get(modality):
                raise InvalidInput(f"{exc}; the collection holds {modality} items: leave them out with "
                                   f"\"modalities\" or use another mixing") from None
    if asked is None:  # None, not the full list, keeps the search free of a modality filter
        return plans, None if len(plans) == len(space.modalities) else [*plans, RAW_MODALITY]
    return plans, asked


async def _query_vector(query: Query, engine: Engine, collection: Collection, space: Space, resolved: ResolvedMixing,
                        plans: dict, decoded) -> tuple[np.ndarray, list[str], str | None]:
    """The query as one unit vector of the space under `resolved`, item ids to leave out of results, and
    what its encoder noticed (e.g. "no speech detected": the results then say little); `decoded(raw)`: the
    router's decoding of inputs, admitted against the request's ticket."""
    given = {k: getattr(query, k) for k in QUERY_KINDS if getattr(query, k) is not None}
    if len(given) != 1:
        raise InvalidInput(f"query: give exactly one of {', '.join(QUERY_KINDS)}")
    if "id" in given:  # "more like this": the stored item re-mixed, itself left out
        found = await run_in_threadpool(collection.components, given["id"])
        if found is None:
            raise ItemNotFoundError(f"collection {collection.name!r} has no item {given['id']!r}")
        modality, keys, leaves, gram = found
        return remix_vectors(plan_for(plans, modality), keys, leaves, gram)[0], [given["id"]], None
    ((modality, item),) = await decoded([given])
    if modality == VECTOR:
        return check_vector(space, item, query.fingerprint, {space.fingerprint(resolved)}, "query"), [], None
    embedding = await engine.embed(space, modality, [item], resolved)
    return embedding.vectors[0], [], embedding.notes[0]


async def _enhance(enhance: Enhance, collection: Collection, plans: dict, indexed: bool, query: np.ndarray,
                   exclude: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Cache model over the collection's items of one modality, all under the request's mixing."""
    if enhance.modality not in collection.meta["groups"] or enhance.modality == RAW_MODALITY:
        have = ", ".join(m for m in collection.meta["groups"] if m != RAW_MODALITY) or "(none)"
        raise InvalidInput(f"enhance.modality {enhance.modality!r}: the collection has no such items; it has {have}")
    query, hits = await run_in_threadpool(enhanced, collection, plans, query, enhance.modality, enhance.k, enhance.t,
                                          enhance.alpha, exclude, indexed)
    return query, [{"id": h.key, "score": h.score} for h in hits]
