"""Evaluation metrics on hand-made cases, and the preset choice rule."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import retrieval_metrics, suggest_presets, zeroshot_metrics


def test_retrieval_recall_both_directions():
    g = np.eye(4, dtype=np.float32)
    q = g[[0, 1, 3, 2]]  # queries 2 and 3 point at each other's match
    m = retrieval_metrics(q, g)
    assert m["q2g_R@1"] == 50.0 and m["g2q_R@1"] == 50.0 and m["q2g_R@5"] == 100.0 and m["mean_R@1"] == 50.0
    with pytest.raises(ValueError, match="aligned"):
        retrieval_metrics(q[:3], g)


def test_zeroshot_top1():
    classes = np.eye(3, dtype=np.float32)
    x = np.array([[1, 0.1, 0], [0, 0, 1], [0.9, 1, 0]], dtype=np.float32)
    assert zeroshot_metrics(x, ["a", "c", "a"], classes, ["a", "b", "c"]) == {"top1": pytest.approx(66.67)}


def test_presets_keep_english_within_two_points():
    def task(group, values):
        return {"group": group, "bonded": {str(f): {"top1": v} for f, v in zip(factors, values, strict=True)}}

    factors = [0.0, 0.5, 1.0]
    report = {"factors": factors, "tasks": {"en": task("english", [90.0, 88.5, 70.0]),
                                            "de": task("multilingual", [20.0, 40.0, 60.0])}}
    assert suggest_presets(report) == {"english": 0.5, "multilingual": 1.0}
