"""/search: the top_k items of a collection for a query, under the request's mixing, with no re-indexing.

The query is embedded under the request's mixing; every stored item is scored from its components
under the same mixing (`bonds.remix`), so a score equals what the item would get if it were embedded
again under that mixing. Small collections (and small filtered sets) are scored exhaustively; large
ones take ANN candidates and re-score those exactly (the collection's index settings say when). The
route parses the request and calls service.collections.search.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bonds.mixing import Mixing
from service import collections
from service.collections import Enhance
from service.deps import EngineDep, MetricsDep, SettingsDep, StoreDep, TicketDep
from service.inputs import UnicodeText, decode, parse_inputs

router = APIRouter(tags=["search"])


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    image: str | None = Field(None, description="base64 or data URI")
    audio: str | None = Field(None, description="base64 or data URI")
    vector: list[float] | None = Field(None, description="a vector of the space under this request's mixing")
    id: UnicodeText | None = Field(None,
                                   description="a stored item: its vector under this request's mixing is the query")
    fingerprint: str | None = Field(None, description="of a `vector` query: checked against space and mixing")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str
    query: Query
    top_k: int = Field(10, ge=1, le=1000)
    mixing: Mixing | None = Field(None, description="preset, factors, off, weights; applied at search time")
    filter: dict[str, Any] | None = Field(None, description='metadata conditions: {"k": v}, {"k": {"in": [...]}}, '
                                          '{"k": {"gte": 1, "lt": 5}}; applied before the top_k cut')
    modalities: list[str] | None = Field(None, description="only items of these modalities")
    enhance: Enhance | None = Field(None, description="pull the query toward the collection's items of one modality")
    mode: Literal["auto", "exact", "ann"] | None = Field(None, description="override the collection's search mode")

    @model_validator(mode="after")
    def _enhance_from_this_collection(self) -> SearchRequest:
        if self.enhance is not None and self.enhance.collection not in (None, self.collection):
            raise ValueError("enhance.collection: /search pulls the query toward the searched collection's own "
                             "items; leave it out")
        return self


@router.post("/search")
async def search(body: SearchRequest, engine: EngineDep, store: StoreDep, settings: SettingsDep, metrics: MetricsDep,
                 ticket: TicketDep) -> dict[str, Any]:
    return await collections.search(
        engine, store, body.collection, body.query, lambda raw: decode(parse_inputs, raw, settings, metrics, ticket),
        top_k=body.top_k, mixing=body.mixing, filter_=body.filter, modalities=body.modalities, enhance=body.enhance,
        mode=body.mode)
