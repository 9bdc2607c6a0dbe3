"""ConSE (Norouzi et al. 2014): an image classifier's posterior turned into a text-space vector, the
top-k classes' renormalised probabilities weighting the embeddings of those classes' prototype texts.

`ConseImages` gives a text encoder an image modality this way: the starter's EfficientNet-Lite0 classifies the
photo and the encoder's own embeddings of the class names are mixed. The starter embeds photos so in MiniLM's
space; the e5 encoder can (`conse_images=True`), which is the ConSE-in-e5 photo the 1,000-class evaluation
takes as its reference, and what lets a combination bond mix photos as it mixes text (docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch

from bonds.encoders.base import Encoder
from bonds.encoders.efficientnet import EfficientNetLite0Encoder
from bonds.encoders.shared import shared_model
from bonds.vectors import l2_normalize

# Prototype recipes: the English text(s) each ImageNet class is embedded as (several are averaged).
PROTOTYPE_RECIPES: dict[str, tuple[str, ...]] = {
    "name": ("{c}",),
    "photo": ("a photo of a {c}.",),
    # CLIP's seven-template ImageNet ensemble subset (Radford et al. 2021, prompt-engineering notebook)
    "ensemble": ("itap of a {c}.", "a bad photo of the {c}.", "a origami {c}.", "a photo of the large {c}.",
                 "a {c} in a video game.", "art of the {c}.", "a photo of the small {c}."),
}
DEFAULT_RECIPE = "name"


def imagenet_classnames() -> list[str]:
    """The 1000 English ImageNet-1k class names shipped in `bonds/data` (CLIP_benchmark, MIT)."""
    text = resources.files("bonds").joinpath("data/en_classnames.json").read_text(encoding="utf-8")
    return list(json.loads(text)["imagenet1k"])


def class_prototypes(text_encoder: Encoder, recipe: str = DEFAULT_RECIPE) -> np.ndarray:
    """`(1000, d)` unit-norm embeddings of the ImageNet classes under `recipe` by a text encoder (MiniLM)."""
    if recipe not in PROTOTYPE_RECIPES:
        raise ValueError(f"unknown prototype recipe {recipe!r}; valid: {', '.join(PROTOTYPE_RECIPES)}")
    names = imagenet_classnames()
    total = np.zeros((len(names), text_encoder.dim), dtype=np.float32)
    for template in PROTOTYPE_RECIPES[recipe]:
        total += text_encoder.encode("text", [template.format(c=name) for name in names]).vectors
    return l2_normalize(total)


def conse(logits_bk: torch.Tensor, prototypes_cd: torch.Tensor, topk: int) -> torch.Tensor:
    """Convex combination of the top-k classes' prototypes, weighted by their renormalised probabilities."""
    probs_bk = torch.softmax(logits_bk.float(), dim=-1)
    top_p, top_i = probs_bk.topk(topk, dim=-1)
    weights_bk = top_p / top_p.sum(dim=-1, keepdim=True)
    return torch.einsum("bk,bkd->bd", weights_bk, prototypes_cd[top_i])


class ConseImages:
    """The image modality of a text encoder: photos classified by EfficientNet-Lite0, the top-k classes'
    renormalised probabilities weighting `text_encoder`'s embeddings of the class prototypes (`recipe`).

    The prototypes are embedded once per process (`key` names the text encoder's weights and options), in
    whatever precision the text encoder runs; an encoder whose own precision is lower passes a float32 twin
    as `exact` so that its photos do not depend on it. Logits are shared through a `LogitsMemo`: a space whose
    starter and e5 both embed a photo classifies it once.
    """

    def __init__(self, text_encoder: Encoder, key: str, *, device: Any = "cpu", topk: int = 10,
                 recipe: str = DEFAULT_RECIPE, runtime: str = "auto", exact: Encoder | None = None):
        if not 1 <= int(topk) <= 1000:
            raise ValueError(f"topk must be between 1 and 1000, got {topk!r}")
        self.topk = int(topk)
        # the classifier keeps its own precision rule (float32: see efficientnet_precision)
        self.classifier = EfficientNetLite0Encoder(device=str(device), output="logits", runtime=runtime)
        self.device = self.classifier.device
        texts = exact or text_encoder
        self.prototypes_cd = torch.from_numpy(
            shared_model(f"prototypes:{key}:{recipe}", str(self.device), lambda: class_prototypes(texts, recipe))
        ).to(self.device)
        # one memo per classifier that computes alike (its runtime and precision), whoever embeds with it
        self.memo = shared_model(f"logits-memo:{self.classifier.runtime}:{self.classifier.precision}",
                                 str(self.device), LogitsMemo)
        self.memo.register()

    @property
    def precision(self) -> str:
        return self.classifier.precision

    @property
    def batch_size(self) -> int:
        return self.classifier.max_batch_size

    def prepare(self, item: Any) -> tuple[torch.Tensor, bytes]:
        """The classifier's pixels and their digest, on the pipeline's CPU workers (the model thread only looks up)."""
        pixels = self.classifier.prepare("image", item)
        return pixels, LogitsMemo.digest(pixels)

    def preprocess(self, items: Sequence[tuple[torch.Tensor, bytes]]) -> tuple[torch.Tensor, list[bytes]]:
        return self.classifier.preprocess("image", [pixels for pixels, _ in items]), [digest for _, digest in items]

    def forward(self, batch: tuple[torch.Tensor, list[bytes]]) -> torch.Tensor:
        pixels, digests = batch
        logits = self.memo.logits(pixels, digests, lambda rows: self.classifier.forward("image", rows))
        return conse(logits.to(self.device), self.prototypes_cd, self.topk)


class LogitsMemo:
    """The classifier's logits by the digest of the pixels, handed from the encoder that classified a photo to
    the others that embed it too: in a space whose starter and e5 (`conse_images`) both embed photos, the
    network runs once per photo. Each encoder using the memo registers; a row is kept until every other one
    has read it once (or `size` newer rows push it out), so it shares one photo's work between sibling
    encoders, never caches a photo for later requests, and a process with one such encoder stores nothing
    (encoders register for the process's life: one built and dropped leaves rows to the size bound).
    Logits are a pure function of the pixels, so a hit is the row the network would give; two threads that
    miss alike only compute it twice. At most 1,024 rows of 1,000 float32 logits: 4 MB."""

    def __init__(self, size: int = 1024):
        self.size = size
        self.readers = 0
        self._rows: OrderedDict[bytes, list] = OrderedDict()  # digest -> [logits, reads left]
        self._lock = threading.Lock()

    def register(self) -> None:
        with self._lock:
            self.readers += 1

    @staticmethod
    def digest(pixels: torch.Tensor) -> bytes:
        return hashlib.blake2b(pixels.contiguous().numpy().tobytes(), digest_size=16).digest()

    def logits(self, pixels: torch.Tensor, digests: Sequence[bytes],
               network: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`(n, 1000)` logits on the CPU: rows another encoder left, the network run on the rest only."""
        rows: list[torch.Tensor | None] = []
        with self._lock:
            for d in digests:
                entry = self._rows.get(d)
                if entry is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._rows[d]
                rows.append(None if entry is None else entry[0])
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            computed = network(pixels[missing]).detach().float().cpu()
            with self._lock:
                for i, row in zip(missing, computed, strict=True):
                    rows[i] = row
                    if self.readers > 1:
                        self._rows[digests[i]] = [row, self.readers - 1]
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
        return torch.stack(rows)
