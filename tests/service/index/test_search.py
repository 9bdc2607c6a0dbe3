"""Picking the best scored items: one group or several, ties to the lower id."""

from __future__ import annotations

import numpy as np

from service.index.search import top


def test_top_orders_by_score_then_lower_id():
    ids = np.array([7, 3, 9, 1, 5], dtype=np.int64)
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    best = top([(ids, scores)], 3)
    assert [(s.id, s.score) for s in best] == [(3, 0.9), (5, 0.9), (7, 0.5)]
    assert all(type(s.id) is int and type(s.score) is float for s in best)  # plain Python values for the JSON answer


def test_one_group_and_split_groups_agree():
    rng = np.random.default_rng(3)
    ids = rng.permutation(200).astype(np.int64)
    scores = np.round(rng.random(200), 2)  # many ties
    whole = top([(ids, scores)], 25)
    split = top([(ids[:80], scores[:80]), (ids[80:], scores[80:])], 25)
    assert [(s.id, s.score) for s in whole] == [(s.id, s.score) for s in split]
    assert len(top([(ids[:4], scores[:4])], 25)) == 4
