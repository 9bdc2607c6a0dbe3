"""Fitting: InfoNCE against a reference, bit-identical resume, and recovery of a known linear relation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from bonds.vectors import l2_normalize
from training.fit import FitConfig, fit, info_nce, load_fitted
from training.state import flatten_optimizer, unflatten_optimizer


def reference_info_nce(a, b, temperature):
    """Plain-Python symmetric InfoNCE: mean over rows of -log softmax at the diagonal, both ways."""
    a = [[v / math.sqrt(sum(u * u for u in x)) for v in x] for x in a]
    b = [[v / math.sqrt(sum(u * u for u in x)) for v in x] for x in b]
    logits = [[sum(p * q for p, q in zip(x, y, strict=True)) / temperature for y in b] for x in a]

    def ce(rows):
        return sum(math.log(sum(math.exp(v) for v in row)) - row[i] for i, row in enumerate(rows)) / len(rows)

    return (ce(logits) + ce([list(col) for col in zip(*logits, strict=True)])) / 2


def test_info_nce_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    for temperature in (1 / 50, 0.5):
        got = float(info_nce(a, b, temperature))
        assert got == pytest.approx(reference_info_nce(a.tolist(), b.tolist(), temperature), rel=1e-10)
    assert float(info_nce(b, b, 1 / 50)) < float(info_nce(a, b, 1 / 50))  # perfect pairs score lower


def write_pairs(workdir, centres: dict[str, tuple[np.ndarray, np.ndarray]]):
    """A pairs stage's output written directly (fit only reads pairs/)."""
    out = workdir / "pairs"
    out.mkdir(parents=True)
    for letter, (s, t) in centres.items():
        save_file({"source": s, "target": t}, str(out / f"{letter}.safetensors"))
    modes = {"mix": list(centres), **({c: [c] for c in centres} if len(centres) > 1 else {})}
    summary = {"config": {"source": "s", "target": "t"},
               "centres": {c: {"pairs": len(v[0])} for c, v in centres.items()}, "modes": modes}
    (out / "summary.json").write_text(json.dumps(summary))


def synthetic(n=600, d_in=12, d_out=10, seed=0):
    rng = np.random.default_rng(seed)
    x = l2_normalize(rng.standard_normal((n, d_in)).astype(np.float32))
    y = l2_normalize(np.tanh(x @ rng.standard_normal((d_in, d_out))).astype(np.float32))
    return x, y


@pytest.mark.parametrize("input_noise", [0.0, 0.05])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, input_noise):
    x, y = synthetic()
    config = FitConfig("displacement", epochs=4, batch_size=128, hidden=32, seed=7, input_noise=input_noise)
    for name in ("whole", "resumed"):
        write_pairs(tmp_path / name, {"T": (x[:400], y[:400]), "V": (x[400:], y[400:])})
    whole = fit(tmp_path / "whole", config, progress=False)
    partial = fit(tmp_path / "resumed", config, progress=False, stop_after=1)  # "killed" after epoch 1
    assert not (tmp_path / "resumed" / "fit" / "projector.safetensors").exists()
    assert any(not torch.equal(v, whole.state_dict()[k]) for k, v in partial.state_dict().items())
    fit(tmp_path / "resumed", config, progress=False, stop_after=2)  # killed again after epoch 3
    resumed = fit(tmp_path / "resumed", config, progress=False)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    history = [json.loads((tmp_path / n / "fit" / "fit.json").read_text())["history"] for n in ("whole", "resumed")]
    assert history[0] == history[1] and list(history[0][0]["loss"]) == ["mix", "T", "V"]


def test_resume_refuses_another_config(tmp_path):
    x, y = synthetic()
    write_pairs(tmp_path, {"T": (x, y)})
    fit(tmp_path, FitConfig("displacement", epochs=2, hidden=16), progress=False, stop_after=1)
    with pytest.raises(ValueError, match="another config"):
        fit(tmp_path, FitConfig("displacement", epochs=2, hidden=16, lr=1e-2), progress=False)


def test_optimizer_state_round_trips_without_pickles():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    tensors, scalars = flatten_optimizer("o", optimizer)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(scalars)
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    fresh.load_state_dict(unflatten_optimizer("o", tensors, json.loads(json.dumps(scalars))))
    assert fresh.param_groups[0]["lr"] == 0.01 and fresh.param_groups[0]["betas"] == (0.9, 0.999)
    for a, b in zip(optimizer.state.values(), fresh.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_known_linear_relation_is_recovered(tmp_path):
    """target = n(source @ A): retrieval through the fitted bond nearly matches the oracle n(source @ A)."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((24, 16)).astype(np.float32)
    x = l2_normalize(rng.standard_normal((5000, 24)).astype(np.float32))
    y = l2_normalize(x @ A)
    write_pairs(tmp_path, {"T": (x[:4000], y[:4000])})
    projector = fit(tmp_path, FitConfig("combination", epochs=10, batch_size=256, hidden=256), progress=False)
    xq, yg = x[4000:], y[4000:]
    through_bond = projector.project(xq)
    oracle = l2_normalize(xq @ A)

    def r_at_1(q, g):
        return float((np.argmax(q @ g.T, axis=1) == np.arange(len(q))).mean())

    assert r_at_1(oracle, yg) == 1.0
    assert r_at_1(through_bond, yg) >= 0.97
    assert r_at_1(xq @ rng.standard_normal((24, 16)).astype(np.float32), yg) < 0.2  # a wrong map does not


def test_export_refuses_an_unfinished_or_stale_fit(tmp_path):
    """State removed, refit with other settings and --stop-after: the old projector is not this fit's."""
    x, y = synthetic(n=200)
    write_pairs(tmp_path, {"T": (x, y)})
    first = fit(tmp_path, FitConfig("displacement", epochs=1, batch_size=64, hidden=16), progress=False)
    loaded, report = load_fitted(tmp_path)
    assert report["finished"] and all(torch.equal(v, first.state_dict()[k]) for k, v in loaded.state_dict().items())
    import shutil

    shutil.rmtree(tmp_path / "fit" / "state")
    fit(tmp_path, FitConfig("displacement", epochs=2, batch_size=64, hidden=8), progress=False, stop_after=1)
    with pytest.raises((ValueError, FileNotFoundError), match="not finished"):
        load_fitted(tmp_path)
    fit(tmp_path, FitConfig("displacement", epochs=2, batch_size=64, hidden=8), progress=False)
    assert load_fitted(tmp_path)[0].config.hidden == 8
    weights = tmp_path / "fit" / "projector.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # e.g. copied in from another run
    with pytest.raises(ValueError, match="is not the projector of the fit"):
        load_fitted(tmp_path)


def test_bad_settings_and_a_diverging_loss_are_errors(tmp_path, monkeypatch):
    x, y = synthetic(n=100)
    write_pairs(tmp_path, {"T": (x, y)})
    for config, says in [(FitConfig("displacement", batch_size=1), "batch size must be >= 2"),
                         (FitConfig("displacement", batch_size=0), "batch size must be >= 2"),
                         (FitConfig("displacement", epochs=0), "epochs must be >= 1"),
                         (FitConfig("displacement", lr=0.0), "learning rate"),
                         (FitConfig("displacement", temperature=-1.0), "temperature"),
                         (FitConfig("displacement", input_noise=-0.1), "input noise"),
                         (FitConfig("displacement", input_noise=float("nan")), "input noise")]:
        with pytest.raises(ValueError, match=says):
            fit(tmp_path, config, progress=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(tmp_path, FitConfig("displacement", epochs=1, hidden=8), progress=False, device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        fit(tmp_path, FitConfig("displacement", epochs=1, hidden=8), progress=False, device="gpu0")
    # 1/T overflows float32: the logits are inf and the loss NaN; fitting stops instead of finishing
    with pytest.raises(ValueError, match="loss of head mix became nan in epoch 1"):
        fit(tmp_path, FitConfig("displacement", epochs=1, hidden=8, temperature=1e-40), progress=False)
    assert not (tmp_path / "fit" / "projector.safetensors").exists()
    x[3, 0] = np.nan
    write_pairs(tmp_path / "nan", {"T": (x, y)})
    with pytest.raises(ValueError, match="centre T hold NaN"):
        fit(tmp_path / "nan", FitConfig("displacement", epochs=1, hidden=8), progress=False)


def test_input_noise_makes_the_map_ignore_directions_the_pairs_never_use(tmp_path):
    """The case noise is for: sources that all lie in one subspace (English text) and inputs shifted out of it
    by one common offset (a language's own direction). Trained with noise, the projector moves those inputs
    less (their projections stay nearer to the unshifted ones') than trained without it, from the same seed."""
    rng = np.random.default_rng(0)
    n, used, d = 800, 8, 16
    x = np.zeros((n, d), np.float32)
    x[:, :used] = rng.standard_normal((n, used))
    x = l2_normalize(x)
    y = l2_normalize(np.tanh(x[:, :used] @ rng.standard_normal((used, 10))).astype(np.float32))
    offsets = np.zeros((5, d), np.float32)
    offsets[:, used:] = rng.standard_normal((5, d - used))
    projectors = {}
    for noise in (0.0, 0.1):
        write_pairs(tmp_path / str(noise), {"T": (x, y)})
        projectors[noise] = fit(tmp_path / str(noise), FitConfig("combination", epochs=8, batch_size=128, hidden=64,
                                                                   input_noise=noise), progress=False)
    kept = {noise: np.mean([np.sum(p.project(x) * p.project(l2_normalize(x + 0.3 * l2_normalize(o[None]))), axis=1)
                            for o in offsets]) for noise, p in projectors.items()}
    assert kept[0.1] > kept[0.0] + 0.005
