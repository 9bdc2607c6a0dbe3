"""A collection's index settings, chosen at creation and stored with it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# An exact search over a Milvus collection reads every component over the network (a 5,000-item scan
# took 3 s against milvus-lite, its ANN + re-score 0.8 s), so `auto` turns to Milvus candidates sooner.
MILVUS_EXACT_BELOW = 1_000


class IndexSettings(BaseModel):
    """How a collection finds candidates. Scores are always exact under the request's mixing.

    `search="auto"` scores every item exactly while the collection (or the set a filter leaves) has at
    most `exact_below` items; above that it asks the ANN index, built on the vectors under the
    collection's default mixing, for `rerank_factor * top_k` candidates and re-scores those exactly.

    `backend="milvus"` keeps the components in Milvus instead of the service's memory (see
    service.index.milvus): the same index types, searches and filters, with candidates from Milvus and
    the exact re-score in the service. `milvus_uri` None means the service's `FREEBIND_MILVUS_URI`;
    `exact_below` left unset is MILVUS_EXACT_BELOW there.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["flat", "hnsw", "ivf"] = Field("flat", description="FAISS index for candidates")
    search: Literal["auto", "exact", "ann"] = Field("auto", description="exact scoring, ANN + rerank, or by size")
    exact_below: int = Field(20_000, ge=0, description="auto: exact while at most this many items are searched")
    rerank_factor: int = Field(10, ge=1, le=1000, description="ANN candidates per requested result")
    m: int = Field(32, ge=4, le=128, description="hnsw: graph degree")
    ef_construction: int = Field(80, ge=8, le=2048, description="hnsw: build-time beam width")
    ef_search: int = Field(512, ge=8, le=4096, description="hnsw: search-time beam width, the recall lever")
    nlist: int = Field(1024, ge=1, le=1 << 20, description="ivf: number of inverted lists")
    nprobe: int = Field(64, ge=1, le=1 << 20, description="ivf: lists visited per search")
    gpu: bool = Field(True, description="search on all GPUs when faiss has them (flat and ivf)")
    backend: Literal["faiss", "milvus"] = Field("faiss", description="where the components live: the service's "
                                                "memory (faiss) or a Milvus server (milvus)")
    milvus_uri: str | None = Field(None, description="library use only (the HTTP API refuses it): a milvus-lite "
                                   "file (path ending in .db) or http://host:19530; default: the service's "
                                   "FREEBIND_MILVUS_URI")

    @model_validator(mode="after")
    def _milvus_defaults(self) -> IndexSettings:
        if self.backend == "milvus" and "exact_below" not in self.model_fields_set:
            self.exact_below = MILVUS_EXACT_BELOW
        return self
