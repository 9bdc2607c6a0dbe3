"""The displacement solved in closed form: orthogonal Procrustes against SciPy's, stored exactly in an ordinary
projector head, and fitted, exported and loaded through the same path as a trained bond."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bonds.checkpoint import load_bond_checkpoint
from tests.training.test_fit import write_pairs
from training.export import export
from training.fit import FitConfig, fit
from training.procrustes import linear_head, orthogonal_map


def _rotated_pairs(n: int, d_in: int, d_out: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(n, d_in))
    source /= np.linalg.norm(source, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.normal(size=(max(d_in, d_out), max(d_in, d_out))))
    q = q[:d_in, :d_out]  # orthonormal columns (d_in >= d_out) or rows (d_in < d_out)
    target = source @ q + noise * rng.normal(size=(n, d_out))
    return source.astype(np.float32), target.astype(np.float32), q


def test_the_map_is_scipys_and_recovers_a_rotation_from_noisy_pairs():
    from scipy.linalg import orthogonal_procrustes

    source, target, q = _rotated_pairs(400, 16, 16, noise=0.05)
    got = orthogonal_map(source, target)
    np.testing.assert_allclose(got, orthogonal_procrustes(source, target)[0], atol=1e-5)
    np.testing.assert_allclose(got @ got.T, np.eye(16), atol=1e-5)
    assert np.abs(got - q).max() < 0.05
    with pytest.raises(ValueError, match="two or more pairs"):
        orthogonal_map(source[:1], target[:1])


@pytest.mark.parametrize(("d_in", "d_out"), [(16, 16), (20, 12), (12, 20)])
def test_the_head_computes_the_normalised_map_exactly(d_in, d_out):
    source, target, _ = _rotated_pairs(300, d_in, d_out, noise=0.1)
    q = orthogonal_map(source, target)
    head = linear_head(q, hidden=2 * d_out + 5)  # spare hidden units stay silent
    x = torch.from_numpy(source)
    expected = source @ q
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(head(x).detach().numpy(), expected, atol=1e-6)
    assert not head.training
    with pytest.raises(ValueError, match=f"hidden width of at least 2 x {d_out} = {2 * d_out}"):
        linear_head(q, hidden=2 * d_out - 1)


def test_a_procrustes_fit_exports_a_displacement_that_keeps_the_source_geometry(tmp_path):
    source, target, _ = _rotated_pairs(500, 16, 16, noise=0.05)
    write_pairs(tmp_path, {"T": (source, target), "V": (source[:50], target[:50])})
    config = FitConfig("displacement", hidden=40, modes=["T"], method="procrustes")
    fit(tmp_path, config, progress=False)
    report = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert report["finished"] and report["config"]["method"] == "procrustes" and report["modes"] == {"T": 500}
    for space in ("s", "t"):  # what export records of the two spaces (a real run has embedded them)
        (tmp_path / "embeddings" / space).mkdir(parents=True)
        (tmp_path / "embeddings" / space / "space.json").write_text(json.dumps(
            {"spec": {"name": space, "encoder": "tiny", "options": {}}, "dim": 16, "modalities": ["text"]}))
    export(tmp_path, tmp_path / "bond", dtype="float16")
    projector, manifest = load_bond_checkpoint(tmp_path / "bond", kind="displacement", d_in=16, d_out=16)
    assert list(projector.heads) == ["T"] and manifest.weights_dtype == "float16"
    probe = _rotated_pairs(40, 16, 16, noise=0.0, seed=1)[0]
    moved = projector.project(probe, normalize=False)
    np.testing.assert_allclose(moved, probe @ orthogonal_map(source, target), atol=3e-3)
    np.testing.assert_allclose(moved @ moved.T, probe @ probe.T, atol=5e-3)  # cosines are the source's


def test_the_method_is_checked_and_infonce_stamps_stay_as_before():
    with pytest.raises(ValueError, match="unknown fit method 'svd'; valid: infonce, procrustes"):
        FitConfig("displacement", method="svd").validate()
    assert "method" not in FitConfig("displacement").to_dict()  # earlier fits still resume
    assert FitConfig("displacement", method="procrustes").to_dict()["method"] == "procrustes"
