"""What /classify does, apart from HTTP: zero-shot classification over description-augmented class
centers (UniBind).

Labels come inline (names, with optional prompt templates, or names with several descriptions each)
or from a shipped label set (`imagenet1k`: CLIP prompts plus the WordNet gloss of each class). Every
description is embedded as text under the request's mixing; a label scores the max (or mean) of its
descriptions' similarities (`bonds.classify`), and the best-matching description is returned as the
reason. Description embeddings are cached per (space fingerprint, which includes the mixing; label set).
The router parses the request and calls `classify`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import numpy as np

from bonds.classify import LabelSet, class_scores, load_labelset, top_labels
from bonds.media import decode_text
from bonds.mixing import Mixing, ResolvedMixing
from bonds.space import Space
from service.admission import Ticket, labels_cost
from service.engine import Engine
from service.errors import InvalidInput, TooManyItems
from service.settings import Settings

EMBED_CHUNK = 256  # descriptions per engine call: well inside the admission limit, still one batch each
shipped_labelset = lru_cache(maxsize=8)(load_labelset)  # parsed once per process; LabelSet is read-only
Decode = Callable[[list[Any]], Awaitable[list[tuple[str, Any]]]]  # the router's admitted decoding
InlineLabels = list[str] | dict[str, list[str] | str]


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


def label_set(labels: InlineLabels | None, labelset: str | None,
              templates: list[str] | None) -> tuple[LabelSet, str]:
    """The labels and a key that identifies them (the set's name, or a hash of the inline labels)."""
    if (labels is None) == (labelset is None):
        raise InvalidInput("give either `labels` or `labelset`")
    if labelset is not None:
        return shipped_labelset(labelset), f"labelset:{labelset}"
    if templates and not isinstance(labels, list):
        raise InvalidInput(
            "`templates` apply to label names (a list); described labels or a label set use their own texts")
    try:
        if isinstance(labels, dict):
            built = LabelSet.from_mapping(labels)
        else:
            built = LabelSet.from_names(labels, templates or ["{}"])
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    blob = json.dumps([built.labels, built.descriptions, built.owner.tolist()]).encode()
    return built, f"inline:{hashlib.sha256(blob).hexdigest()}"


def check_inline(labels: LabelSet, settings: Settings) -> None:
    """Inline labels are text inputs: the same length limit and valid Unicode, and at most
    `max_label_descriptions` of them."""
    if len(labels.descriptions) > settings.max_label_descriptions:
        raise TooManyItems(f"{len(labels.descriptions)} label descriptions; the limit is "
                           f"{settings.max_label_descriptions} per request (FREEBIND_MAX_LABEL_DESCRIPTIONS)")
    for text in (*labels.labels, *labels.descriptions):
        decode_text(text, settings.media_limits())


async def embed_descriptions(engine: Engine, space: Space, descriptions: list[str],
                             mixing: ResolvedMixing) -> np.ndarray:
    parts = []
    for start in range(0, len(descriptions), EMBED_CHUNK):
        embedding = await engine.embed(space, "text", descriptions[start: start + EMBED_CHUNK], mixing)
        parts.append(embedding.vectors)
    return np.concatenate(parts)


async def classify(engine: Engine, cache: CenterCache, settings: Settings, ticket: Ticket, decode: Decode, *,
                   inputs: list[Any], space_name: str | None, mixing: Mixing | None, labels: InlineLabels | None,
                   labelset: str | None, templates: list[str] | None, aggregate: str,
                   top_k: int) -> dict[str, Any]:
    """The top_k labels of each input. Checked in order: the space and mixing, the labels, the inputs; the
    descriptions are embedded (and admitted on `ticket`) only on a cache miss."""
    space = engine.space(space_name)
    resolved = space.resolve(mixing)
    label_list, labels_key = label_set(labels, labelset, templates)
    if labels is not None:
        check_inline(label_list, settings)
    decoded = await decode(inputs)  # bad inputs fail before the labels are embedded

    async def centres() -> np.ndarray:  # only on a cache miss: the descriptions are admitted like any inputs
        ticket.reserve(labels_cost(label_list.descriptions))
        return await embed_descriptions(engine, space, label_list.descriptions, resolved)

    fingerprint = space.fingerprint(resolved)
    centers = await cache.get((fingerprint, labels_key), centres)
    embedded = await engine.embed_inputs(space, decoded, resolved)
    scores, matched = class_scores(embedded.vectors, centers, label_list.owner, len(label_list.labels), aggregate)
    best, best_scores = top_labels(scores, top_k)
    results = []
    for i in range(len(embedded.vectors)):
        results.append({"labels": [{"label": label_list.labels[k], "index": int(k), "score": float(s),
                                    "description": label_list.descriptions[matched[i, k]]}
                                   for k, s in zip(best[i], best_scores[i], strict=True)]})
    return {"results": results, "fingerprint": fingerprint, "mixing": resolved.to_dict(), "aggregate": aggregate,
            "labelset": labelset}
