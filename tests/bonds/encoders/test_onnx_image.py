"""ONNX Runtime image networks: a tiny randomly initialised two-output conv net, exported through the same
code path as EfficientNet-Lite0, checked against PyTorch (split runs, a lone image, the cache, a refused
export)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx", reason="the export writes through the onnx package")

from bonds.encoders import onnx_image  # noqa: E402
from bonds.encoders.onnx_files import cache_dir, weights_path  # noqa: E402

OUTPUTS = ("pooled", "logits")


class _TinyNet(nn.Module):
    """Pooled features and logits, as the exported EfficientNet answers."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 32, 3, stride=2, padding=1)  # 3.5 KB: weights beside the graph
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        pooled = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return pooled, self.head(pooled)


def _pixels(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


def _torch_outputs(net, pixels):
    with torch.no_grad():
        return [t.numpy() for t in net(torch.from_numpy(pixels))]


@pytest.fixture()
def weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "tiny.pth"
    path.write_bytes(b"stands for the weights file the export is keyed by")
    return path


def _load(weights, build, threads: int, digest: str = "v1"):
    return onnx_image.load(weights, digest, build, OUTPUTS, _pixels(2, seed=0), threads)


@pytest.mark.parametrize("count", [1, 2, 5, 9], ids=lambda n: f"{n}-images")
def test_runs_side_by_side_match_pytorch_in_input_order(weights, count):
    """One image runs alone on both threads; more are split in uneven parts (5 -> 3 + 2) run side by side;
    rows come back where they went in."""
    net = _TinyNet(seed=0).eval()
    model = _load(weights, lambda: net, threads=2)
    pixels = _pixels(count)
    for got, want in zip(model.run(pixels), _torch_outputs(net, pixels), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_cached_export_is_used_without_building_the_module(weights):
    first = _load(weights, lambda: _TinyNet(seed=0).eval(), threads=1)

    def must_not_build():
        raise AssertionError("the cached export should have been used")

    again = _load(weights, must_not_build, threads=2)
    assert again.path == first.path and weights_path(first.path).is_file()
    retrained = _load(weights, lambda: _TinyNet(seed=3).eval(), threads=1, digest="v2")  # other weights
    assert retrained.path != first.path and not first.path.exists()  # the earlier export went
    np.testing.assert_allclose(retrained.run(_pixels(3))[1], _torch_outputs(_TinyNet(seed=3).eval(), _pixels(3))[1],
                               atol=1e-5)


def test_an_export_that_disagrees_is_refused_and_leaves_nothing(weights, monkeypatch):
    monkeypatch.setattr(onnx_image, "PROBE_TOLERANCE", -1.0)  # no graph can pass: the refusal path runs
    with pytest.raises(RuntimeError, match="disagrees with PyTorch"):
        _load(weights, lambda: _TinyNet(seed=0).eval(), threads=1)
    assert not any((cache_dir() / "onnx").iterdir())  # no partial or unchecked file left behind
