"""Exported ONNX graphs on disk, shared by the encoders that run on ONNX Runtime (bonds.encoders.onnx_text
for BERT-family text models, bonds.encoders.onnx_image for image networks): where exports are cached,
what they are named, writing one whole and checked or not at all, clearing earlier ones, and the
session options every run uses.

Exports are cached under `cache_dir()/onnx/`, keyed by the weights (their files' path, size and mtime, or
a digest the caller names) and the torch version; the weights sit beside the graph (`<graph>.data`), which
ONNX Runtime maps instead of copying, so processes and sessions share the pages.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EXPORT_FORMAT = 2  # bump when the exported graphs' inputs/outputs or files change (2: weights beside the graph)
PROBE_MIN_COSINE = 0.99999


def cache_dir() -> Path:
    """Where derived artefacts (exported graphs) live: `FREEBIND_CACHE_DIR`, else the XDG cache."""
    explicit = os.environ.get("FREEBIND_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "freebind"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_key(model_dir: str | Path, content_digest: str | None = None) -> str:
    """Names the exported file: changes when the weights or the exporter change. The weights are known by
    `content_digest` where the caller has one (a hash of their file), else by the folder's weight files'
    path, size and mtime."""
    import torch

    digest = hashlib.sha256(f"{EXPORT_FORMAT}|{torch.__version__}".encode())
    if content_digest:
        digest.update(f"|{content_digest}".encode())
        return digest.hexdigest()[:24]
    folder = Path(model_dir).resolve()
    for weights in sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin"), folder / "config.json"]):
        if weights.is_file():
            stat = weights.stat()
            digest.update(f"|{weights}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def weights_path(graph: Path) -> Path:
    """The weights file beside a graph (`<graph>.data`, the name written inside the graph)."""
    return graph.with_name(f"{graph.name}.data")


def move_weights_out(graph: Path) -> None:
    """Rewrite `graph` with its weights in `weights_path(graph)`. ONNX Runtime maps such a file instead of
    copying the weights into each session: e5's two sessions (470 MB of weights) held 1,011 MiB of RSS with
    the weights inside the graph, 226 MiB with them beside it, and processes share the mapped pages."""
    import onnx

    onnx.save_model(onnx.load(str(graph)), str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=weights_path(graph).name, size_threshold=1024)


def export_path(model_dir: str | Path, content_digest: str | None = None, variant: str | None = None) -> Path:
    """`<folder name>[.<variant>]-<hash of its path>-<export key>.onnx`: exports of one folder share everything
    up to the key (`prune` keeps the newest of them). `model_dir` may also be a weights file (named by
    `content_digest`); a `variant` (another graph of the same weights) is a family of its own."""
    folder = Path(model_dir).resolve()
    where = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    name = f"{folder.name}.{variant}" if variant else folder.name
    return cache_dir() / "onnx" / f"{name}-{where}-{export_key(folder, content_digest)}.onnx"


def prune(current: Path, stale_partial_s: float = 3600.0) -> list[Path]:
    """Delete the folder's earlier exports (older weights or torch: each is the model's full size and nothing
    reads it again; a running session keeps its mapping of a deleted file) and partial exports that no
    export is still writing."""
    family = glob.escape(current.name.rsplit("-", 1)[0])
    removed = [file for old in current.parent.glob(f"{family}-*.onnx") if old != current
               for file in (old, weights_path(old)) if file.exists()]
    now = time.time()
    for partial in current.parent.glob(f"{family}-*.partial"):
        try:
            if now - partial.stat().st_mtime > stale_partial_s:
                removed.append(partial)
        except FileNotFoundError:  # its export just finished or gave up
            continue
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.info("removed %s, an earlier export", path.name)
    return removed


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle intra-op threads that spin steal the cores from request threads and the other chunks' runs
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class SideBySideSessions:
    """One exported graph's sessions for a budget of `threads`: `wide` runs on every thread (a small batch,
    for latency); `side_by_side` runs a batch's parts at once on one-thread runs, which use a few cores
    better than one run's intra-op threads (ORT sessions take concurrent runs)."""

    thread_name = "onnx"

    def __init__(self, path: str | Path, threads: int):
        self.path, self.threads = Path(path), max(1, int(threads))
        self.wide = session(self.path, threads=self.threads)
        self._narrow = session(self.path, threads=1) if self.threads > 1 else self.wide
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.thread_name) if self.threads > 1 else None

    def side_by_side(self, run: Callable[[Any, Any], Any], parts: Sequence[Any]) -> list[Any]:
        """`run(session, part)` for every part, `threads` at a time (in turn with one thread), in order."""
        if self._pool is None:
            return [run(self.wide, part) for part in parts]
        return list(self._pool.map(lambda part: run(self._narrow, part), parts))


def rows_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def write_checked(path: Path, write_graph: Callable[[Path], None], check: Callable[[Path], None]) -> None:
    """`write_graph(file)` into a private folder, `check(file)` there (it raises if the graph is wrong),
    then the weights moved beside the graph and both put at `path`: readers see a whole, checked export
    or none, whatever else is exporting at the same time."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")  # a folder
    graph = partial / path.name
    try:
        partial.mkdir(parents=True)
        write_graph(graph)
        check(graph)
        move_weights_out(graph)
        if weights_path(graph).exists():  # a graph whose every tensor is small keeps them inside
            os.replace(weights_path(graph), weights_path(path))
        os.replace(graph, path)  # the weights are in place before the graph that names them
    finally:
        shutil.rmtree(partial, ignore_errors=True)

