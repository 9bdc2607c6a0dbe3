"""/classify: zero-shot classification over description-augmented class centers (UniBind).

Labels come inline (names, with optional prompt templates, or names with several descriptions each)
or from a shipped label set (`imagenet1k`: CLIP prompts plus the WordNet gloss of each class). Every
description is embedded as text under the request's mixing; a label scores the max (or mean) of its
descriptions' similarities, and the best-matching description is returned as the reason. Description
embeddings are cached per (space fingerprint, which includes the mixing; label set).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bonds.classify import LabelSet, class_scores, list_labelsets, load_labelset, top_labels
from bonds.media import decode_text
from bonds.mixing import Mixing, ResolvedMixing
from bonds.space import Space
from service.admission import labels_cost
from service.deps import EngineDep, MetricsDep, SettingsDep, TicketDep
from service.engine import Engine
from service.errors import InvalidInput, TooManyItems
from service.inputs import decode, parse_inputs

router = APIRouter(tags=["classify"])
EMBED_CHUNK = 256  # descriptions per engine call: well inside the admission limit, still one batch each
shipped_labelset = lru_cache(maxsize=8)(load_labelset)  # parsed once per process; LabelSet is read-only


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(..., min_length=1, description='strings or {"text"|"image"|"audio"|"vector": ...}')
    labels: list[str] | dict[str, list[str] | str] | None = Field(
        None, description="label names, or label -> one or more descriptions")
    labelset: str | None = Field(None, description="a shipped label set instead of `labels` (GET /labelsets)")
    templates: list[str] | None = Field(None, description="for label names: prompts with '{}' for the name")
    space: str | None = None
    mixing: Mixing | None = Field(None, description="preset, factors, off, weights")
    aggregate: Literal["max", "mean"] = Field("max", description="a label's score over its descriptions")
    top_k: int = Field(5, ge=1, le=1000)


class CenterCache:
    """Embedded descriptions by (space fingerprint, label-set key), least recently used dropped first."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self.entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.misses = 0

    async def get(self, key: tuple[str, str], compute) -> np.ndarray:
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent requests for the same labels embed them once
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
            self.misses += 1
            centers = await compute()
            self.entries[key] = centers
            while len(self.entries) > self.capacity:
                dropped, _ = self.entries.popitem(last=False)
                self.locks.pop(dropped, None)
            return centers


def center_cache(request: Request) -> CenterCache:
    state = request.app.state
    if getattr(state, "center_cache", None) is None:  # per app, made on first use
        state.center_cache = CenterCache()
    return state.center_cache


def label_set(body: ClassifyRequest) -> tuple[LabelSet, str]:
    """The labels and a key that identifies them (the set's name, or a hash of the inline labels)."""
    if (body.labels is None) == (body.labelset is None):
        raise InvalidInput("give either `labels` or `labelset`")
    if body.labelset is not None:
        return shipped_labelset(body.labelset), f"labelset:{body.labelset}"
    if body.templates and not isinstance(body.labels, list):
        raise InvalidInput(
            "`templates` apply to label names (a list); described labels or a label set use their own texts")
    try:
        if isinstance(body.labels, dict):
            labels = LabelSet.from_mapping(body.labels)
        else:
            labels = LabelSet.from_names(body.labels, body.templates or ["{}"])
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    blob = json.dumps([labels.labels, labels.descriptions, labels.owner.tolist()]).encode()
    return labels, f"inline:{hashlib.sha256(blob).hexdigest()}"


async def embed_descriptions(engine: Engine, space: Space, descriptions: list[str],
                             mixing: ResolvedMixing) -> np.ndarray:
    parts = []
    for start in range(0, len(descriptions), EMBED_CHUNK):
        embedding = await engine.embed(space, "text", descriptions[start: start + EMBED_CHUNK], mixing)
        parts.append(embedding.vectors)
    return np.concatenate(parts)


@router.post("/classify")
async def classify(body: ClassifyRequest, request: Request, engine: EngineDep, settings: SettingsDep,
                   metrics: MetricsDep, ticket: TicketDep) -> dict[str, Any]:
    space = engine.space(body.space)
    resolved = space.resolve(body.mixing)
    labels, labels_key = label_set(body)
    if body.labels is not None:  # inline labels are text inputs: same length limit, valid Unicode
        if len(labels.descriptions) > settings.max_label_descriptions:
            raise TooManyItems(f"{len(labels.descriptions)} label descriptions; the limit is "
                               f"{settings.max_label_descriptions} per request (FREEBIND_MAX_LABEL_DESCRIPTIONS)")
        for text in (*labels.labels, *labels.descriptions):
            decode_text(text, settings.media_limits())
    inputs = await decode(parse_inputs, body.inputs, settings, metrics, ticket)  # bad inputs fail before the labels

    async def centres() -> np.ndarray:  # only on a cache miss: the descriptions are admitted like any inputs
        ticket.reserve(labels_cost(labels.descriptions))
        return await embed_descriptions(engine, space, labels.descriptions, resolved)

    fingerprint = space.fingerprint(resolved)
    centers = await center_cache(request).get((fingerprint, labels_key), centres)
    embedded = await engine.embed_inputs(space, inputs, resolved)
    scores, matched = class_scores(embedded.vectors, centers, labels.owner, len(labels.labels), body.aggregate)
    best, best_scores = top_labels(scores, body.top_k)
    results = []
    for i in range(len(embedded.vectors)):
        results.append({"labels": [{"label": labels.labels[k], "index": int(k), "score": float(s),
                                    "description": labels.descriptions[matched[i, k]]}
                                   for k, s in zip(best[i], best_scores[i], strict=True)]})
    return {"results": results, "fingerprint": fingerprint, "mixing": resolved.to_dict(), "aggregate": body.aggregate,
            "labelset": body.labelset}


@router.get("/labelsets")
async def labelsets() -> dict[str, Any]:
    out = []
    for name in list_labelsets():
        labels = shipped_labelset(name)
        out.append({"name": name, "labels": len(labels.labels), "descriptions": len(labels.descriptions)})
    return {"labelsets": out}
