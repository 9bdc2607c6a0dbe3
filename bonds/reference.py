"""The FreeBind formulas on plain arrays: the reference the plans (bonds.plan) and the bonds
(bonds.bond) are tested against, and the arithmetic of evaluation sweeps over cached leaves.

n(x) is L2 normalisation; f, a bond's factor for a modality, always weights the *projected* term.
Shapes: `(n, d)`.
"""

from __future__ import annotations

import numpy as np

from bonds.mixing import check_factor
from bonds.vectors import l2_normalize


def normalize(x_nd: np.ndarray) -> np.ndarray:
    """n(x) of the formulas: bonds.vectors.l2_normalize, in float64."""
    return l2_normalize(x_nd, dtype=np.float64)


def displace(projected_nd: np.ndarray, expert_nd: np.ndarray, f: float) -> np.ndarray:
    """Displacement, modality in both spaces: n(f * n(P(base)) + (1 - f) * expert)."""
    check_factor("f", f)
    return normalize(f * normalize(projected_nd) + (1.0 - f) * np.asarray(expert_nd, dtype=np.float64))


def combine(base_nd: np.ndarray, projected_nd: np.ndarray, f: float) -> np.ndarray:
    """Combination, modality in both spaces: n((1 - f) * base + f * n(P(expert)))."""
    check_factor("f", f)
    return normalize((1.0 - f) * np.asarray(base_nd, dtype=np.float64) + f * normalize(projected_nd))


def pool(head_outputs_per_expert: list[np.ndarray], weights_k: list[float] | None = None) -> np.ndarray:
    """Parallel experts: one mean over every head of every expert (2 CLAP experts of 7 heads -> 14
    outputs), each expert's heads weighted by its weight: n(sum_k w_k * sum_h head_kh), uniform by default.
    `head_outputs_per_expert[k]` is `(heads_k, n, d)`, the unit outputs of expert k's heads."""
    if not head_outputs_per_expert:
        raise ValueError("pool needs at least one expert's projection")
    k = len(head_outputs_per_expert)
    w = np.ones(k) if weights_k is None else np.asarray(weights_k, dtype=np.float64)
    if w.shape != (k,) or (w < 0).any() or w.max() == 0:
        raise ValueError(f"pool weights must be {k} non-negative numbers, not all 0")
    w = w / w.max()  # the same direction; weights near the float64 limits neither overflow nor vanish
    return normalize(
        sum(wk * np.asarray(h, dtype=np.float64).sum(0) for wk, h in zip(w, head_outputs_per_expert, strict=True)))
