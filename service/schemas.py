"""The shapes of the service's answers, for the OpenAPI document (service.openapi) and its readers.

Documentation only: routers build their answers as dicts (vectors are written by orjson straight
from numpy, service.responses), so nothing is validated against these on the way out; a test checks
real answers against them instead, so they cannot drift from what the routes send.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ResolvedMixing(BaseModel):
    preset: str | None = Field(None, description="the preset the mixing started from, if any")
    factors: dict[str, dict[str, float]] = Field(..., description="bond -> modality -> factor in effect")
    off: list[str] = Field(..., description="bonds (or bond/expert) switched off")
    weights: dict[str, dict[str, float]] = Field(..., description="parallel bond -> expert -> weight")


class EmbeddingRow(BaseModel):
    index: int
    modality: Literal["text", "image", "audio", "vector"]
    embedding: list[float] | str = Field(..., description="floats, or base64 of little-endian float32")
    note: str | None = Field(None, description="what the encoder noticed, e.g. 'no speech detected'")


class EmbedResponse(BaseModel):
    space: str
    fingerprint: str = Field(..., description="space + resolved mixing: compare vectors only when these are equal")
    dim: int
    mixing: ResolvedMixing
    enhance: dict[str, Any] | None = Field(None, description="the enhancement applied, when asked for")
    data: list[EmbeddingRow]


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(..., description="tokens of the text inputs, counted by the space's text tokenizer "
                                                 "where it has one; 0 otherwise")
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    fingerprint: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    id: str = Field(..., description="a served space: the `model` of /v1/embeddings")
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"]
    data: list[OpenAIModel]


class BondInfo(BaseModel):
    name: str
    kind: Literal["displacement", "combination"]
    experts: list[str]
    modalities: list[str]
    defaults: dict[str, float]


class EncoderInfo(BaseModel):
    name: str
    dim: int
    modalities: list[str]
    licence: str


class SpaceInfo(BaseModel):
    name: str
    dim: int
    modalities: list[str]
    space_id: str
    bonds: list[BondInfo]
    presets: dict[str, dict[str, dict[str, float]]]
    default_preset: str | None
    encoders: dict[str, EncoderInfo]
    default: bool
    default_mixing: ResolvedMixing
    fingerprint: str


class SpaceList(BaseModel):
    default: str
    spaces: list[SpaceInfo]


class CollectionInfo(BaseModel):
    name: str
    space: str
    space_id: str
    dim: int
    count: int
    modalities: dict[str, int] = Field(..., description="items per modality")
    index: dict[str, Any]
    mixing: dict[str, Any] = Field(..., description="the mixing of the stored vectors, every factor spelled out")
    created: float
    mixing_resolved: ResolvedMixing | None = Field(None, description="on creation: the mixing as resolved")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class Deleted(BaseModel):
    name: str | None = None
    collection: str | None = None
    id: str | None = None
    deleted: Literal[True]


class Upserted(BaseModel):
    collection: str
    upserted: int
    ids: list[str]


class StoredItem(BaseModel):
    id: str
    modality: str
    metadata: dict[str, Any]


class Hit(BaseModel):
    id: str
    score: float
    modality: str
    metadata: dict[str, Any]


class Neighbour(BaseModel):
    id: str
    score: float


class SearchResponse(BaseModel):
    results: list[Hit]
    fingerprint: str
    mixing: ResolvedMixing
    neighbours: list[Neighbour] | None = Field(None, description="with enhance.return_neighbours")
    query_note: str | None = Field(None, description="what the query's encoder noticed, e.g. 'no speech detected'")


class LabelScore(BaseModel):
    label: str
    index: int
    score: float
    description: str = Field(..., description="the label's description that matched best")


class Classified(BaseModel):
    labels: list[LabelScore]


class ClassifyResponse(BaseModel):
    results: list[Classified]
    fingerprint: str
    mixing: ResolvedMixing
    aggregate: Literal["max", "mean"]
    labelset: str | None


class LabelSetInfo(BaseModel):
    name: str
    labels: int
    descriptions: int


class LabelSetList(BaseModel):
    labelsets: list[LabelSetInfo]


class EncoderHealth(BaseModel):
    alive: bool
    healthy: bool
    queued: int
    consecutive_failures: int


class Health(BaseModel):
    status: Literal["alive", "dead", "ready", "not ready"]
    state: str = Field(..., description="starting, loading, warming, ready, failed or stopped")
    error: str | None
    spaces: list[str]
    encoders: dict[str, EncoderHealth]
    items_in_flight: int


class Problem(BaseModel):
    """RFC 9457 problem details; under /v1/ also OpenAI's `error` member."""

    type: str = Field(..., description="urn:freebind:problem:<kind>")
    title: str
    status: int
    detail: str
    request_id: str | None = None
    index: int | None = Field(None, description="the position of the offending input")
    errors: list[dict[str, Any]] | None = None
    error: dict[str, Any] | None = Field(None, description="under /v1/: {message, type, code, param}")
