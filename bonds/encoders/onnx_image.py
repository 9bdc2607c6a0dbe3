"""Image networks run by ONNX Runtime on CPU: the same weights as the torch module, exported once.

Why: measured on this project's 2-core CPU for EfficientNet-Lite0 (random 224x224 inputs, same weights),
PyTorch's eager forward ran 83-99 images/s on two intra-op threads; ONNX Runtime ran 116-126 on one
thread and 217-230 with two one-thread runs side by side, outputs equal to 1e-5. Torch's intra-op threads
also share the cores badly with the request threads of a busy server (an OpenMP region waits for its
slowest thread), where independent one-thread runs do not wait for each other. The export is cached and
checked as bonds.encoders.onnx_files says.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bonds.encoders.onnx_files import SideBySideSessions, export_path, prune, session, write_checked

log = logging.getLogger(__name__)

INPUT = "pixels"
# an export's outputs must equal the torch module's to this (absolute, on outputs of order 1-10)
PROBE_TOLERANCE = 1e-3


def export(module, outputs: Sequence[str], path: Path, probe: np.ndarray) -> None:
    """Write `module`'s graph (one float input `(batch, 3, h, w)`, the named outputs) to `path`, checked
    against the module on `probe` first."""
    import torch

    pixels = torch.from_numpy(np.ascontiguousarray(probe, dtype=np.float32))

    def write_graph(graph: Path) -> None:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on the padding it fixes for this input size
            torch.onnx.export(module, (pixels,), str(graph), input_names=[INPUT], output_names=list(outputs),
                              opset_version=17, dynamo=False,
                              dynamic_axes={name: {0: "batch"} for name in (INPUT, *outputs)})

    def check(graph: Path) -> None:
        with torch.no_grad():
            expected = module(pixels)
        got = session(graph, threads=1).run(None, {INPUT: pixels.numpy()})
        for name, want, have in zip(outputs, expected, got, strict=True):
            error = float(np.abs(want.numpy() - have).max())
            if not error <= PROBE_TOLERANCE:
                raise RuntimeError(f"the exported graph's {name} disagrees with PyTorch (max error {error:.2e})")

    write_checked(path, write_graph, check)
    log.info("exported %s to %s", type(module).__name__, path)


class OnnxImageModel(SideBySideSessions):
    """A batch of pixels through the exported graph: one run on every thread for a lone image (latency),
    otherwise the batch split into `threads` parts run side by side, one thread each."""

    thread_name = "onnx-image"

    def run(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for `(n, 3, h, w)` float32 pixels, rows in input order."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if self.threads == 1 or len(pixels) < 2:
            return self.wide.run(None, {INPUT: pixels})
        parts = np.array_split(pixels, min(self.threads, len(pixels)))
        results = self.side_by_side(lambda session, part: session.run(None, {INPUT: part}), parts)
        return [np.concatenate(outputs) for outputs in zip(*results, strict=True)]


def load(weights: str | Path, content_digest: str, build: Callable[[], object], outputs: Sequence[str],
         probe: np.ndarray, threads: int) -> OnnxImageModel:
    """The cached export of the module `build()` makes from `weights` (exported now if missing: `build` is
    not called otherwise), ready to run on `threads` threads."""
    path = export_path(weights, content_digest)
    if not path.is_file():
        export(build(), outputs, path, probe)
        prune(path)
    return OnnxImageModel(path, threads)
