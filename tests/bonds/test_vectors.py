"""The one normaliser and the one re-scorer against plain numpy references, with explicit tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.plan import Encode, Project, Sum, gram
from bonds.remix import remix_scores, remix_vectors
from bonds.vectors import l2_normalize


def test_rows_become_unit_vectors_as_numpy_divides_them():
    x = np.random.default_rng(0).standard_normal((50, 24)).astype(np.float32)
    out = l2_normalize(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    wide = l2_normalize(x.astype(np.float64), dtype=np.float64)
    assert wide.dtype == np.float64
    np.testing.assert_allclose(wide, x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True), atol=1e-15)


def test_one_vector_zero_rows_and_float32_extremes():
    np.testing.assert_allclose(l2_normalize(np.array([3.0, 4.0])), [0.6, 0.8], atol=1e-7)
    rows = np.array([[0.0, 0.0, 0.0], [3e38, 3e38, 0.0], [1e-30, 0.0, 1e-30]], dtype=np.float32)
    out = l2_normalize(rows)
    assert np.array_equal(out[0], np.zeros(3)) and np.isfinite(out).all()  # a zero row stays zero, never NaN
    np.testing.assert_allclose(out[1], [2**-0.5, 2**-0.5, 0.0], atol=1e-7)  # squared in float32: inf
    np.testing.assert_allclose(out[2], [1e-18, 0.0, 1e-18], rtol=1e-6)  # a norm below eps: divided by eps
    exact = l2_normalize(rows[1:], eps=0.0)  # a caller that refused zero rows itself: every row unit
    np.testing.assert_allclose(exact, [[2**-0.5, 2**-0.5, 0.0], [2**-0.5, 0.0, 2**-0.5]], atol=1e-7)


@pytest.mark.parametrize("f", [0.0, 0.3, 1.0])
def test_remixed_scores_equal_the_products_with_the_rebuilt_vectors(f):
    """`q . n((1 - f) base + f P)` from float32 leaves and their Gram matrix, against the float64 product
    of the query with each item's vector built by numpy."""
    rng = np.random.default_rng(1)
    base, projected = Encode("base", "text"), Project("bond/e", Encode("e", "text"))
    plan = Sum(((1.0 - f, base), (f, projected))) if 0 < f < 1 else (base if f == 0 else projected)
    leaves_nld = rng.standard_normal((40, 2, 16)).astype(np.float32)
    leaves_nld[:, 0] /= np.linalg.norm(leaves_nld[:, 0], axis=1, keepdims=True)  # encoder outputs are unit
    query_d = rng.standard_normal(16)
    keys = [base.key, projected.key]
    mixed_nd = (1.0 - f) * leaves_nld[:, 0].astype(np.float64) + f * leaves_nld[:, 1].astype(np.float64)
    if 0 < f < 1:
        mixed_nd /= np.linalg.norm(mixed_nd, axis=1, keepdims=True)
    scores = remix_scores(query_d, plan, keys, leaves_nld, gram(leaves_nld))
    assert scores.dtype == np.float64 and scores.shape == (40,)
    np.testing.assert_allclose(scores, mixed_nd @ query_d.astype(np.float32), rtol=0, atol=1e-5)
    np.testing.assert_allclose(remix_vectors(plan, keys, leaves_nld, gram(leaves_nld)) @ query_d, scores, atol=1e-5)
