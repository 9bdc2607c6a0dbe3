"""The one protocol every encoder implements, and the media item types it takes.

An encoder maps items of its modalities to L2-normalised float32 vectors of one dimension in four
steps, so that a server can give each its own concurrency and overlap them:
- `prepare(modality, item)`: per-item CPU work (decode-level resizing, audio features, tokenising one
  text), thread-safe, run by a pool of workers while the device computes another batch;
- `preprocess(modality, prepared)`: a model-ready batch of prepared items (stacking, padding);
- `forward(modality, batch)`: the model call, on the encoder's device, in its precision (`autocast`);
- `postprocess(modality, outputs)`: unit-norm float32 vectors on the host, once per batch.
Items are already decoded: text is `str`, images are RGB `PIL.Image.Image`, audio is `Audio`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bonds.encoders.precision import autocast
from bonds.errors import ModalityError
from bonds.vectors import l2_normalize

MODALITIES = ("text", "image", "audio")


@dataclass(frozen=True)
class Audio:
    """Mono waveform in [-1, 1] at `sample_rate` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass
class Encoded:
    """Vectors `(n, dim)` (rows unit-norm) and an optional note per item (e.g. "no speech detected")."""

    vectors: np.ndarray
    notes: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.notes:
            self.notes = [None] * len(self.vectors)


class Encoder(ABC):
    """An embedding model: `dim`, `modalities`, and `encode(modality, items)`."""

    name: str = "encoder"
    dim: int
    modalities: tuple[str, ...]
    licence: str = "unknown"
    max_batch_size: int = 32
    device: Any = "cpu"
    precision: str = "float32"  # what `forward` computes in (see bonds.encoders.precision)

    def check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ModalityError(
                f"encoder {self.name!r} does not embed {modality!r}; it embeds {', '.join(self.modalities)}"
            )

    def prepare(self, modality: str, item: Any) -> Any:
        """One decoded item -> what `preprocess` batches (default: the item as is). Thread-safe CPU work."""
        return item

    @abstractmethod
    def preprocess(self, modality: str, items: Sequence[Any]) -> Any:
        """Prepared items -> a model-ready batch (tensors, token ids, ...)."""

    @abstractmethod
    def forward(self, modality: str, batch: Any) -> Any:
        """Model-ready batch -> raw outputs."""

    def postprocess(self, modality: str, outputs: Any) -> Encoded:
        """Raw outputs -> unit-norm float32 vectors. Override to attach per-item notes."""
        array = outputs.detach().float().cpu().numpy() if hasattr(outputs, "detach") else outputs
        return Encoded(l2_normalize(array))

    def batch_size(self, modality: str) -> int:
        """Items per model call of `modality` (`max_batch_size` unless a modality's model wants another)."""
        return self.max_batch_size

    def precision_of(self, modality: str) -> str:
        """What `forward` computes `modality` in (`precision` unless a modality's model keeps another)."""
        return self.precision

    def encode(self, modality: str, items: Sequence[Any], batch_size: int | None = None) -> Encoded:
        """Unit-norm vectors of `items`, in model calls of `batch_size` items (default: `batch_size(modality)`)."""
        self.check_modality(modality)
        if len(items) == 0:
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), [])
        size = max(1, int(batch_size or self.batch_size(modality)))
        out: list[Encoded] = []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            out.append(self.encode_prepared(modality, [self.prepare(modality, item) for item in chunk]))
        vectors = np.concatenate([o.vectors for o in out]).astype(np.float32, copy=False)
        return Encoded(vectors, [n for o in out for n in o.notes])

    def encode_prepared(self, modality: str, prepared: Sequence[Any]) -> Encoded:
        """One model call on prepared items: preprocess -> forward (in the encoder's precision) -> postprocess."""
        try:
            import torch
        except ImportError:  # numpy-only encoders (the tiny test encoder) need no torch
            return self.postprocess(modality, self.forward(modality, self.preprocess(modality, prepared)))
        with torch.inference_mode():
            batch = self.preprocess(modality, prepared)
            with autocast(self.precision_of(modality), self.device):
                outputs = self.forward(modality, batch)
            return self.postprocess(modality, outputs)

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens per text as the model reads them (after truncation), or None: no tokenizer to count with."""
        return None

    def info(self) -> dict[str, Any]:
        precisions = {m: self.precision_of(m) for m in self.modalities}
        precision = self.precision if set(precisions.values()) == {self.precision} else precisions
        return {"name": self.name, "dim": self.dim, "modalities": list(self.modalities), "licence": self.licence,
                "device": str(self.device), "precision": precision}
