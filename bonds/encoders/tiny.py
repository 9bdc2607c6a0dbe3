"""A deterministic tiny encoder for tests and examples: no weights, no downloads, milliseconds per call.

Text is a bag of hashed words through a seeded random projection (texts sharing words are close);
images are an 8x8 colour thumbnail through another; audio is a 32-band magnitude spectrum.
Not a real model: it only has to be deterministic, fast, and structured enough for ranking tests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from bonds.encoders.base import MODALITIES, Audio, Encoder
from bonds.encoders.registry import ENCODERS

_WORD = re.compile(r"\w+", re.UNICODE)
_TEXT_BUCKETS = 512


def _bucket(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.lower().encode(), digest_size=4).digest(), "little")


@ENCODERS.register("tiny")
class TinyEncoder(Encoder):
    licence = "Apache-2.0 (no weights)"

    def __init__(self, dim: int = 16, seed: int = 0, modalities: Sequence[str] = MODALITIES, name: str = "tiny"):
        self.name = name
        self.dim = int(dim)
        self.modalities = tuple(modalities)
        rng = np.random.default_rng(seed)
        self._text_proj = rng.standard_normal((_TEXT_BUCKETS, self.dim)).astype(np.float32)
        self._image_proj = rng.standard_normal((8 * 8 * 3, self.dim)).astype(np.float32)
        self._audio_proj = rng.standard_normal((32, self.dim)).astype(np.float32)

    def preprocess(self, modality: str, items: Sequence[Any]) -> np.ndarray:
        if modality == "text":
            bags = np.zeros((len(items), _TEXT_BUCKETS), dtype=np.float32)
            for i, text in enumerate(items):
                for word in _WORD.findall(str(text)):
                    bags[i, _bucket(word) % _TEXT_BUCKETS] += 1.0
                bags[i, _bucket("\0bias") % _TEXT_BUCKETS] += 0.1  # keeps empty text off the zero vector
            return bags
        if modality == "image":
            thumbs = [np.asarray(img.convert("RGB").resize((8, 8)), dtype=np.float32).ravel() / 255.0 for img in items]
            return np.stack(thumbs) - 0.5
        spectra = []
        for audio in items:
            assert isinstance(audio, Audio)
            magnitude = np.abs(np.fft.rfft(audio.samples.astype(np.float32), n=2048))
            bands = np.array_split(magnitude, 32)
            spectra.append(np.log1p(np.array([b.mean() for b in bands], dtype=np.float32)))
        return np.stack(spectra)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(_WORD.findall(str(text))) for text in texts]  # its tokens are words

    def forward(self, modality: str, batch: np.ndarray) -> np.ndarray:
        proj = {"text": self._text_proj, "image": self._image_proj, "audio": self._audio_proj}[modality]
        return batch @ proj
