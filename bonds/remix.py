"""Scoring stored items under any mixing, from their components, without re-embedding them.

An item's vector under mixing M is `x = sum_l a_l(M, G) * leaf_l`, where the coefficients depend on
the mixing and on the item's own Gram matrix G of leaves (bonds.plan.coefficients). So with the leaves
and G stored at index time, `q . x = sum_l a_l * (q . leaf_l)`: exact, for any mixing. This is the one
re-scorer: the service's collections score every stored item through `remix_scores`, a block at a time.
"""

from __future__ import annotations

import numpy as np

from bonds.errors import MixingError
from bonds.plan import Node, coefficients, leaves


def item_coefficients(plan: Node, keys: list[str], gram_nll: np.ndarray) -> np.ndarray:
    """`(n, L)` weights of the stored leaves `keys` that give each item's vector under `plan`."""
    index = {key: i for i, key in enumerate(keys)}
    try:
        return coefficients(plan, index, gram_nll)
    except KeyError:  # looked for only now: a search re-scores every query, and the walk is not free
        missing = [leaf.key for leaf in leaves(plan) if leaf.key not in index]
        raise MixingError(
            f"this mixing needs component {missing[0]!r}, which the collection did not store: a displacement "
            "bond projects an already-mixed vector, so its inner factors are fixed at index time; "
            "re-index the items under this mixing"
        ) from None


def remix_scores(query_d: np.ndarray, plan: Node, keys: list[str], leaves_nld: np.ndarray,
                 gram_nll: np.ndarray) -> np.ndarray:
    """Inner products `(n,)` (float64) of a query vector with each item's vector under `plan`.

    The leaf products are taken in the leaves' own float32 (one BLAS matrix-vector product, no float64
    copy of the leaves: a search re-scores thousands of items per query), the coefficients in float64.
    """
    a_nl = item_coefficients(plan, keys, gram_nll)
    dots_nl = leaves_nld @ np.asarray(query_d, dtype=leaves_nld.dtype)
    return np.einsum("nl,nl->n", a_nl, dots_nl)


def remix_vectors(plan: Node, keys: list[str], leaves_nld: np.ndarray, gram_nll: np.ndarray) -> np.ndarray:
    """Each item's vector `(n, d)` under `plan`, rebuilt from its stored leaves."""
    a_nl = item_coefficients(plan, keys, gram_nll)
    return np.einsum("nl,nld->nd", a_nl, leaves_nld.astype(np.float64)).astype(np.float32)
