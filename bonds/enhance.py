"""Training-free cache enhancement (ImageBind-LLM): pull a query toward a bank's manifold.

    s, idx = topk(bank . f, k);  w = softmax(t * s);  p = n(sum_j w_j v_j);  f' = n((1 - a) f + a p)

The bank holds embeddings of a target modality (images, in the paper), unit-norm, in the query's space.
`a = 0` returns `f` unchanged; `t = 0` weights the k neighbours uniformly. Defaults follow the paper's
demo (k = 10, t = 20, a = 0.5); the effect was never ablated there, so measure it before relying on it.
"""

from __future__ import annotations

import numpy as np

from bonds.vectors import l2_normalize

DEFAULT_K = 10
DEFAULT_T = 20.0
DEFAULT_ALPHA = 0.5


def check_params(k: int, t: float, alpha: float) -> None:
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"t (softmax temperature scale) must be a finite number >= 0, got {t!r}")
    if not np.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def nearest(query_nd: np.ndarray, bank_md: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: scores `(n, k)` and bank indices `(n, k)`, best first."""
    if len(bank_md) == 0:
        raise ValueError("the cache bank is empty")
    k = min(int(k), len(bank_md))
    sims_nm = np.atleast_2d(query_nd).astype(np.float32) @ np.asarray(bank_md, dtype=np.float32).T
    part_nk = np.argpartition(-sims_nm, k - 1, axis=1)[:, :k]
    order_nk = np.argsort(-np.take_along_axis(sims_nm, part_nk, axis=1), axis=1, kind="stable")
    idx_nk = np.take_along_axis(part_nk, order_nk, axis=1)
    return np.take_along_axis(sims_nm, idx_nk, axis=1), idx_nk


def blend(query_nd: np.ndarray, scores_nk: np.ndarray, values_nkd: np.ndarray, t: float = DEFAULT_T,
          alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """`n((1 - a) f + a n(sum_j softmax(t s)_j v_j))` from already-found neighbours; `(n, d)` float32.

    Split from `nearest` so a caller with its own index (FAISS, a re-mixed collection) can supply them.
    """
    check_params(1, t, alpha)
    f_nd = np.atleast_2d(np.asarray(query_nd, dtype=np.float64))
    s_nk = np.atleast_2d(np.asarray(scores_nk, dtype=np.float64))
    v_nkd = np.asarray(values_nkd, dtype=np.float64)
    if v_nkd.ndim == 2:
        v_nkd = v_nkd[None]
    if v_nkd.shape[:2] != s_nk.shape or v_nkd.shape[0] != f_nd.shape[0] or v_nkd.shape[2] != f_nd.shape[1]:
        raise ValueError(f"shapes do not fit: query {f_nd.shape}, scores {s_nk.shape}, values {v_nkd.shape}")
    if alpha == 0.0:
        return f_nd.astype(np.float32)  # exactly f, not a re-normalised copy of it
    logits_nk = t * s_nk
    w_nk = np.exp(logits_nk - logits_nk.max(axis=1, keepdims=True))
    w_nk /= w_nk.sum(axis=1, keepdims=True)
    p_nd = l2_normalize(np.einsum("nk,nkd->nd", w_nk, v_nkd), dtype=np.float64)
    return l2_normalize((1.0 - alpha) * f_nd + alpha * p_nd)


def cache_enhance(query_nd: np.ndarray, bank_md: np.ndarray, k: int = DEFAULT_K, t: float = DEFAULT_T,
                  alpha: float = DEFAULT_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Enhanced queries `(n, d)` and the bank indices of the neighbours used `(n, k)`."""
    check_params(k, t, alpha)
    query_nd = np.atleast_2d(np.asarray(query_nd, dtype=np.float32))
    bank_md = np.asarray(bank_md, dtype=np.float32)
    if bank_md.ndim != 2 or bank_md.shape[1] != query_nd.shape[1]:
        raise ValueError(f"bank must be (m, {query_nd.shape[1]}), got {bank_md.shape}")
    s_nk, idx_nk = nearest(query_nd, bank_md, k)
    return blend(query_nd, s_nk, bank_md[idx_nk], t, alpha), idx_nk
