"""UniBind class centers against a loop-over-labels numpy reference, and the shipped label set."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.classify import LabelSet, class_scores, list_labelsets, load_labelset, top_labels
from bonds.errors import UnknownNameError


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference(query_nd, centers_md, owner_m, n_labels, aggregate):
    """One label at a time, the obvious way."""
    scores = np.zeros((len(query_nd), n_labels))
    matched = np.zeros((len(query_nd), n_labels), dtype=int)
    for i, q in enumerate(query_nd):
        for k in range(n_labels):
            mine = np.flatnonzero(owner_m == k)
            sims = centers_md[mine] @ q
            scores[i, k] = sims.max() if aggregate == "max" else sims.mean()
            matched[i, k] = mine[np.argmax(sims)]
    return scores, matched


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_scores_match_reference(aggregate):
    rng = np.random.default_rng(0)
    owner = rng.permutation(np.repeat(np.arange(7), rng.integers(1, 5, size=7)))  # uneven, shuffled
    centers = unit(rng.standard_normal((len(owner), 12))).astype(np.float32)
    query = unit(rng.standard_normal((5, 12))).astype(np.float32)
    scores, matched = class_scores(query, centers, owner, 7, aggregate)
    ref_scores, ref_matched = reference(query, centers, owner, 7, aggregate)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    np.testing.assert_array_equal(matched, ref_matched)


def test_one_center_per_label_is_plain_cosine_and_max_equals_mean():
    rng = np.random.default_rng(1)
    centers = unit(rng.standard_normal((4, 8))).astype(np.float32)
    query = unit(rng.standard_normal((3, 8))).astype(np.float32)
    owner = np.arange(4)
    best, _ = class_scores(query, centers, owner, 4, "max")
    mean, _ = class_scores(query, centers, owner, 4, "mean")
    np.testing.assert_allclose(best, query @ centers.T, atol=1e-6)
    np.testing.assert_allclose(best, mean, atol=1e-6)


def test_max_picks_the_description_that_matches():
    """A query equal to one label's second description wins with score 1 and names that description."""
    rng = np.random.default_rng(2)
    centers = unit(rng.standard_normal((6, 32))).astype(np.float32)
    owner = np.array([0, 0, 1, 1, 2, 2])
    scores, matched = class_scores(centers[3:4], centers, owner, 3)
    idx, top = top_labels(scores, 2)
    assert idx[0, 0] == 1 and matched[0, 1] == 3
    assert top[0, 0] == pytest.approx(1.0, abs=1e-6) and top[0, 0] >= top[0, 1]


def test_top_labels_sorted_and_clipped():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    idx, top = top_labels(scores, 10)
    assert idx.tolist() == [[1, 3, 2, 0]] and np.all(np.diff(top[0]) <= 0)


def test_bad_inputs_raise_value_errors():
    centers = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="aggregate"):
        class_scores(centers, centers, np.arange(3), 3, "median")
    with pytest.raises(ValueError, match="no center"):
        class_scores(centers, centers, np.array([0, 0, 2]), 3)
    with pytest.raises(ValueError, match="dim"):
        class_scores(np.ones((1, 4)), centers, np.arange(3), 3)
    with pytest.raises(ValueError, match="no description"):
        LabelSet.from_mapping({"cat": ["a cat"], "dog": []})
    with pytest.raises(ValueError, match="template"):
        LabelSet.from_names(["cat"], ["a photo"])


def test_label_set_from_names_and_templates():
    ls = LabelSet.from_names(["cat", "dog"], ["a photo of a {}.", "a {}."])
    assert ls.labels == ["cat", "dog"]
    assert ls.descriptions == ["a photo of a cat.", "a cat.", "a photo of a dog.", "a dog."]
    assert ls.owner.tolist() == [0, 0, 1, 1]


def test_shipped_imagenet_label_set():
    assert "imagenet1k" in list_labelsets()
    ls = load_labelset("imagenet1k")
    assert len(ls.labels) == 1000 and ls.labels[0] == "tench"
    tench = [d for d, k in zip(ls.descriptions, ls.owner, strict=True) if k == 0]
    assert "a photo of a tench." in tench
    assert any("freshwater" in d for d in tench)  # the WordNet gloss of n01440764
    with pytest.raises(UnknownNameError, match="imagenet1k"):
        load_labelset("imagenet21k")


def test_tied_labels_come_in_label_order():
    """ImageNet has two identical "missile" labels: the lower index must come first, at the cut too."""
    scores = np.full((1, 40), 0.9)
    scores[0, 30] = 0.95
    idx, _ = top_labels(scores, 3)
    assert idx.tolist() == [[30, 0, 1]]
    rng = np.random.default_rng(0)
    ints = rng.integers(0, 5, size=(20, 50)).astype(float)
    idx, best = top_labels(ints, 4)
    want = np.array([sorted(range(50), key=lambda j, r=r: (-r[j], j))[:4] for r in ints])
    assert np.array_equal(idx, want) and np.array_equal(best, np.take_along_axis(ints, want, axis=1))
