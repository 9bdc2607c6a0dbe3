"""The one normaliser: rows of vectors scaled to unit L2 norm.

Every unit vector FreeBind hands out comes from here: encoder outputs (bonds.encoders.base), a plan's
weighted sums (bonds.plan), the cache enhancement (bonds.enhance), the reference formulas
(bonds.reference), the service's client-given vectors and training's pseudo-pairs (training.pairs). The
norm is taken in float64 whatever the input: finite float32 numbers near their limits (3e38, 1e-30)
overflow or vanish when squared in float32.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12  # norms below this divide by it instead: a zero row stays zero, never NaN


def l2_normalize(x_nd: np.ndarray, eps: float = EPS, dtype: type = np.float32) -> np.ndarray:
    """Rows of `x_nd` (`(..., d)`; a single `(d,)` vector too) scaled to unit L2 norm, as `dtype`.

    A row whose norm is below `eps` is divided by `eps`. `eps=0` for a caller that refused zero rows
    itself: every row then comes out unit, however small (a client's vector of 1e-30s).
    """
    wide = np.asarray(x_nd, dtype=np.float64)
    norms = np.linalg.norm(wide, axis=-1, keepdims=True)
    return (wide / np.maximum(norms, eps)).astype(dtype, copy=False)
