"""Exact scores of stored items under a request's mixing, a block of rows at a time.

Each item is scored with `bonds.remix.remix_scores` from its stored leaves and Gram matrix, so the score
equals the one the item would get if it were re-embedded under that mixing. Rows are processed in blocks
so memory stays flat however large the collection. A search under the collection's own default mixing needs none of
that: each item's vector under it is stored (the one the ANN index holds), so its score is one product.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from bonds.plan import RAW_PLAN, VECTOR, Node
from bonds.remix import remix_scores, remix_vectors
from service.index.groups import GroupView

BLOCK = 16_384


class Scored(NamedTuple):  # a tuple: a search builds one per hit, and a frozen dataclass costs ~1.5 us each
    id: int
    score: float


def plan_for(plans: Mapping[str, Node] | None, modality: str) -> Node | None:
    """The plan scoring `modality`'s items; None (no plans) scores the stored default-mixing vectors."""
    if plans is None:
        return None
    return RAW_PLAN if modality == VECTOR else plans[modality]


def score_rows(query_d: np.ndarray, plan: Node | None, view: GroupView, rows: np.ndarray) -> np.ndarray:
    """Scores `(len(rows),)` of `view`'s rows under `plan`, or of their default-mixing vectors (plan None)."""
    query_d = np.asarray(query_d, dtype=np.float32)
    out = np.empty(len(rows), dtype=np.float64)
    contiguous = len(rows) > 0 and rows[-1] - rows[0] == len(rows) - 1
    for start in range(0, len(rows), BLOCK):
        if contiguous:  # a slice, not a gathered copy
            block = slice(int(rows[start]), int(rows[min(start + BLOCK, len(rows)) - 1]) + 1)
        else:
            block = rows[start: start + BLOCK]
        if plan is None:  # the vectors the ANN index holds: one product, no components
            out[start: start + BLOCK] = view.vectors[block] @ query_d
        else:
            out[start: start + BLOCK] = remix_scores(query_d, plan, view.keys, view.leaves[block], view.gram[block])
    return out


def vectors_of_rows(plan: Node, view: GroupView, rows: np.ndarray) -> np.ndarray:
    """The items' vectors `(len(rows), d)` under `plan`, rebuilt from their leaves."""
    return remix_vectors(plan, view.keys, view.leaves[rows], view.gram[rows])


def _best(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of one array, ordered; every item tied with the k-th is weighed, so ties go to the lower id."""
    if len(ids) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


def top(scored: list[tuple[np.ndarray, np.ndarray]], k: int) -> list[Scored]:
    """The k best over several blocks' `(ids, scores)`, best first (ties: lower id first)."""
    picked = [_best(ids, scores, k) for ids, scores in scored if len(ids)]
    if not picked:
        return []
    if len(picked) > 1:
        picked = [_best(np.concatenate([p[0] for p in picked]), np.concatenate([p[1] for p in picked]), k)]
    ids, scores = picked[0]
    return [Scored(i, s) for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]


def excluded(ids: np.ndarray, exclude: set[int]) -> np.ndarray:
    """Which of `ids` are in `exclude`."""
    return np.isin(ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))


def indexed(ids: np.ndarray, scores: np.ndarray, k: int, exclude: set[int]) -> list[Scored]:
    """The ANN index's own answer, its scores exact under the default mixing it holds; the k best."""
    kept = ids >= 0  # -1: fewer items qualified than asked for
    if exclude:
        kept &= ~excluded(ids, exclude)
    return top([(ids[kept], scores[kept].astype(np.float64))], k)


def exact(views: Mapping[str, GroupView], plans: Mapping[str, Node] | None, query_d: np.ndarray, k: int,
          allowed: np.ndarray | None, exclude: set[int]) -> list[Scored]:
    """Every live (and allowed, not excluded) item scored; the k best."""
    scored = []
    for modality, view in views.items():
        mask = view.alive.copy()
        if allowed is not None:
            mask &= np.isin(view.ids, allowed, assume_unique=True)
        if exclude:
            mask &= ~excluded(view.ids, exclude)
        rows = np.flatnonzero(mask)
        if len(rows):
            scored.append((view.ids[rows], score_rows(query_d, plan_for(plans, modality), view, rows)))
    return top(scored, k)


def rerank(views: Mapping[str, GroupView], plans: Mapping[str, Node], query_d: np.ndarray, k: int,
           candidates: Mapping[str, np.ndarray], exclude: set[int]) -> list[Scored]:
    """Exact scores of ANN candidates (rows per modality); the k best."""
    scored = []
    for modality, rows in candidates.items():
        view = views[modality]
        rows = np.sort(rows)
        if exclude:
            rows = rows[~excluded(view.ids[rows], exclude)]
        if len(rows):
            scored.append((view.ids[rows], score_rows(query_d, plan_for(plans, modality), view, rows)))
    return top(scored, k)
