"""ConSE (Norouzi et al. 2014): an image classifier's posterior turned into a text-space vector, the
top-k classes' renormalised probabilities weighting the embeddings of those classes' prototype texts.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import torch

from bonds.encoders.base import Encoder
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
