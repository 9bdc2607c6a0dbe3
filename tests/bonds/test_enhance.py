"""ImageBind-LLM cache enhancement against a numpy reference written out step by step."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.enhance import blend, cache_enhance, nearest


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference(f, bank, k, t, a):
    out, used = [], []
    for q in f:
        sims = bank @ q
        idx = np.argsort(-sims)[:k]
        w = np.exp(t * sims[idx]) / np.exp(t * sims[idx]).sum()
        p = unit((w[:, None] * bank[idx]).sum(0))
        out.append(unit((1 - a) * q + a * p))
        used.append(idx)
    return np.array(out), np.array(used)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return unit(rng.standard_normal((4, 16))), unit(rng.standard_normal((50, 16)))


@pytest.mark.parametrize(("k", "t", "a"), [(10, 20.0, 0.5), (1, 20.0, 0.3), (5, 0.0, 1.0), (50, 100.0, 0.8)])
def test_matches_reference(data, k, t, a):
    f, bank = data
    enhanced, idx = cache_enhance(f, bank, k=k, t=t, alpha=a)
    ref, ref_idx = reference(f, bank, k, t, a)
    np.testing.assert_allclose(enhanced, ref, atol=1e-5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(np.linalg.norm(enhanced, axis=1), 1.0, atol=1e-5)


def test_alpha_zero_returns_f_unchanged(data):
    f, bank = data
    enhanced, _ = cache_enhance(f, bank, alpha=0.0)
    np.testing.assert_array_equal(enhanced, f.astype(np.float32))


def test_alpha_one_with_k_one_is_the_nearest_bank_vector(data):
    f, bank = data
    enhanced, idx = cache_enhance(f, bank, k=1, alpha=1.0)
    np.testing.assert_allclose(enhanced, bank[idx[:, 0]], atol=1e-6)


def test_enhancement_moves_the_query_toward_the_bank(data):
    f, bank = data
    enhanced, idx = cache_enhance(f, bank, k=3, alpha=0.5)
    for q, e, neighbours in zip(f, enhanced, idx, strict=True):
        assert (bank[neighbours] @ e).mean() > (bank[neighbours] @ q).mean()


def test_k_larger_than_the_bank_uses_the_whole_bank(data):
    f, bank = data
    _, idx = cache_enhance(f, bank[:3], k=10)
    assert idx.shape == (4, 3)


def test_blend_from_external_neighbours_equals_cache_enhance(data):
    f, bank = data
    s, idx = nearest(f, bank, 7)
    np.testing.assert_allclose(blend(f, s, bank[idx], t=20.0, alpha=0.5), cache_enhance(f, bank, k=7)[0], atol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [({"k": 0}, "k must"), ({"t": -1.0}, "t "), ({"alpha": 1.5}, "alpha")])
def test_bad_parameters_raise(data, kwargs, match):
    f, bank = data
    with pytest.raises(ValueError, match=match):
        cache_enhance(f, bank, **kwargs)


def test_empty_bank_and_wrong_dims_raise(data):
    f, bank = data
    with pytest.raises(ValueError, match="empty"):
        cache_enhance(f, bank[:0])
    with pytest.raises(ValueError, match="bank must be"):
        cache_enhance(f, bank[:, :8])
