"""Transformer text encoders (BERT family) run by ONNX Runtime: the same weights, exported once.

Why: on a few CPU cores, PyTorch's eager forward of a small BERT such as MiniLM is bound by per-op
overhead, and its intra-op threads scale poorly over two cores. ONNX Runtime runs a fused graph, and
a batch split into chunks of similar-length texts, taken in turn by one-thread runs side by side, uses
both cores fully: measured on this project's 2-core CPU for all-MiniLM-L6-v2 on Multi30k captions, about
250-285 texts/s against PyTorch's 110-160, with the same vectors (cosine to PyTorch's 1.00000). Chunks
of at most `CHUNK_TOKENS` padded tokens keep each run's activations in cache: batches of 128 captions
went from 245-315 texts/s (one chunk per core) to 330-415, and ~90-token texts from 25-40 to 56-60.

The export goes through torch's exporter (it needs the `onnx` package) the first time a model folder
is seen, checked against PyTorch on probe inputs, and cached as bonds.encoders.onnx_files says (keyed by
the folder's weight files, or by a digest of a weights file the caller names, as the e5 encoder does). A
later process with a cached export never loads the PyTorch model at all; a new export replaces the
folder's earlier ones.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from bonds.encoders.onnx_files import (  # noqa: F401 - cache_dir, onnxruntime_available, weights_path: this module's API too
    PROBE_MIN_COSINE,
    SideBySideSessions,
    cache_dir,
    export_path,
    onnxruntime_available,
    prune,
    rows_cosine,
    session,
    weights_path,
    write_checked,
)

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MIN_CHUNK = 4  # below this many texts a chunk's fixed cost outweighs running it beside another
# padded tokens per chunk at most (a longer text runs alone): small chunks keep activations in the core's cache
CHUNK_TOKENS = 128


def mean_pool(hidden_btd: np.ndarray, mask_bt: np.ndarray) -> np.ndarray:
    """Mean over real tokens only: padding would otherwise pull short texts towards each other."""
    mask_bt1 = mask_bt[..., None].astype(hidden_btd.dtype)
    return (hidden_btd * mask_bt1).sum(1) / np.maximum(mask_bt1.sum(1), 1e-9)


def export(load_model: Callable[[], object], path: Path, probe: Mapping[str, np.ndarray],
           rewrite: Callable[[Path], None] | None = None, min_cosine: float | None = None) -> None:
    """Write `load_model()`'s graph to `path` (atomically), after checking it against PyTorch on `probe`.

    `rewrite(graph)` edits the exported file in place before the check (e5 puts its 4-bit weights back);
    the check then asks `min_cosine` of each probe row instead of the exporter's near-identity
    (`PROBE_MIN_COSINE`)."""
    import torch

    model = load_model()

    class _Hidden(torch.nn.Module):  # keyword call: transformers' positional order is not the graph's
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    wrapped = _Hidden(model).eval()
    tensors = tuple(torch.from_numpy(np.asarray(probe[name], dtype=np.int64)) for name in INPUTS)

    def write_graph(graph: Path) -> None:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python branches it fixes for this graph
            torch.onnx.export(wrapped, tensors, str(graph), input_names=list(INPUTS),
                              output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                              dynamic_axes={name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")})
        if rewrite is not None:
            rewrite(graph)

    def check(graph: Path) -> None:
        with torch.no_grad():
            expected = mean_pool(wrapped(*tensors).numpy(), probe["attention_mask"])
        got = OnnxTextModel._run(session(graph, threads=1), probe, np.arange(len(probe["input_ids"])))
        cosine = rows_cosine(expected, got)
        if cosine.min() < (PROBE_MIN_COSINE if min_cosine is None else min_cosine):
            raise RuntimeError(f"the exported graph disagrees with PyTorch (min cosine {cosine.min():.6f})")

    write_checked(path, write_graph, check)
    log.info("exported %s to %s", type(model).__name__, path)


class OnnxTextModel(SideBySideSessions):
    """Mean-pooled hidden states of token batches, a batch split into chunks of similar-length texts that
    `threads` one-thread runs take in turn, longest first."""

    thread_name = "onnx-text"

    def pooled(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """`(n, d)` float32 mean-pooled last hidden states of a tokenized, padded batch."""
        n = len(batch["input_ids"])
        chunks = min(self.threads, math.ceil(n / MIN_CHUNK)) if n else 1
        if chunks <= 1:  # always so with one thread
            return self._run(self.wide, batch, np.arange(n))
        parts = balanced_chunks(batch["attention_mask"].sum(1), chunks, max_tokens=CHUNK_TOKENS)
        results = self.side_by_side(lambda session, rows: self._run(session, batch, rows), parts)
        out = np.empty((n, results[0].shape[1]), dtype=np.float32)
        for rows, result in zip(parts, results, strict=True):
            out[rows] = result
        return out

    @staticmethod
    def _run(session, batch: Mapping[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
        used_columns = np.flatnonzero(batch["attention_mask"][rows].any(0))
        width = int(used_columns[-1]) + 1 if len(used_columns) else 1  # columns after the last real token are pads
        feed = {name: np.ascontiguousarray(batch[name][rows, :width], dtype=np.int64) for name in INPUTS}
        return mean_pool(session.run(None, feed)[0], feed["attention_mask"]).astype(np.float32, copy=False)


def balanced_chunks(lengths: np.ndarray, chunks: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Row indices in groups of similar-length texts, longest first, with padded sizes (rows x longest) as
    even as can be: at most `chunks` groups, or more if that is what keeps each within `max_tokens` (a
    group of one text may pass it). Groups run side by side, so a batch takes as long as its largest.

    Longest first, each group takes as many rows as fit a size limit; the smallest limit that needs no
    more than `chunks` groups is found by bisection, then capped at `max_tokens`.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    widths = np.maximum(np.asarray(lengths)[order], 1)

    def split(limit: int) -> list[np.ndarray]:
        parts, start = [], 0
        while start < len(order):
            stop = start + max(1, limit // int(widths[start]))
            parts.append(order[start:stop])
            start = stop
        return parts

    low, high = 1, int(widths[0]) * len(order)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if len(split(middle)) <= chunks else (middle + 1, high)
    return split(min(low, max_tokens) if max_tokens else low)


def load(model_dir: str | Path, load_model: Callable[[], object], probe: Mapping[str, np.ndarray],
         threads: int, content_digest: str | None = None, rewrite: Callable[[Path], None] | None = None,
         min_cosine: float | None = None, variant: str | None = None) -> OnnxTextModel:
    """The cached export of `model_dir` (made now if missing, with `export`'s `rewrite` and `min_cosine`),
    ready to run with `threads` threads. A graph that `rewrite` changes is a `variant` of the plain export:
    it is cached beside it, not instead of it."""
    path = export_path(model_dir, content_digest, variant)
    if not path.is_file():
        export(load_model, path, probe, rewrite=rewrite, min_cosine=min_cosine)
        prune(path)
    return OnnxTextModel(path, threads)


