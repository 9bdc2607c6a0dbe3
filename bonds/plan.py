"""A bonded embedding as an expression over "leaf" vectors, and the pure math that evaluates it.

Every bond formula in FreeBind is a normalised weighted sum of vectors, nested:
`n(f * n(P(base)) + (1 - f) * expert)`, `n((1 - f) * base + f * n(sum_j w_j P_j(expert_j)))`.
So a space answers `plan(modality, mixing)` with a tree of three node kinds:

- `Encode`  leaf: an encoder's unit-norm output for one modality;
- `Project` leaf: a projector mixture's mean-of-heads over a source node (not unit norm);
- `Sum`     n(sum_i c_i * term_i), coefficients fixed by the mixing.

Plans make two things cheap: an encoder whose coefficient is 0 never runs (the node is dropped while
building the plan), and a stored item can be re-mixed at search time from its leaves and their Gram
matrix alone (`coefficients`), with no re-embedding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bonds.vectors import l2_normalize


@dataclass(frozen=True)
class Encode:
    space: str  # name of the encoder space
    modality: str

    @property
    def key(self) -> str:
        return f"{self.space}:{self.modality}"


@dataclass(frozen=True)
class Project:
    projector: str  # "<bond>/<expert>", the projector mixture's id
    source: Node

    @property
    def key(self) -> str:
        return f"{self.projector}({self.source.key})"


@dataclass(frozen=True)
class Sum:
    terms: tuple[tuple[float, Node], ...]

    @property
    def key(self) -> str:
        return "n(" + " + ".join(f"{_exact(c)}*{node.key}" for c, node in self.terms) + ")"


def _exact(c: float) -> str:
    """The shortest text that reads back as `c` (a key must tell 0.3 from 0.3000004), "1" for 1.0."""
    text = repr(float(c))
    return text[:-2] if text.endswith(".0") else text


Node = Encode | Project | Sum
Leaf = Encode | Project

# A vector of the space given as it is (a service's client sends one, a collection stores it): no encoder
# made it, so no space plans it; it is its own single leaf, scored as it is.
VECTOR = "vector"
RAW_PLAN = Encode("raw", VECTOR)


def is_unit(node: Node) -> bool:
    return isinstance(node, Encode | Sum)


def weighted(terms: Iterable[tuple[float, Node]]) -> Node:
    """n(sum c_i node_i), dropping zero coefficients so their encoders never run."""
    kept = tuple((float(c), node) for c, node in terms if c != 0.0)
    if not kept:
        raise ValueError("a weighted sum needs at least one term with a non-zero coefficient")
    if len(kept) == 1 and kept[0][0] > 0 and is_unit(kept[0][1]):
        return kept[0][1]  # n(c * unit) == unit
    return Sum(kept)


def leaves(node: Node) -> list[Leaf]:
    """The leaves a plan is a function of, in first-seen order (a Project's source is inside it)."""
    found: dict[str, Leaf] = {}

    def walk(n: Node) -> None:
        if isinstance(n, Sum):
            for _, child in n.terms:
                walk(child)
        else:
            found.setdefault(n.key, n)

    walk(node)
    return list(found.values())


def encoder_leaves(node: Node) -> list[Encode]:
    """Every encoder output a plan is a function of, projections' sources included, in first-seen order:
    what a caller must encode before `Space.evaluate` can run the plan."""
    found: dict[str, Encode] = {}

    def walk(n: Node) -> None:
        if isinstance(n, Encode):
            found.setdefault(n.key, n)
        elif isinstance(n, Project):
            walk(n.source)
        else:
            for _, child in n.terms:
                walk(child)

    walk(node)
    return list(found.values())


def materialize(node: Node, values: dict[str, np.ndarray]) -> np.ndarray:
    """The plan's vectors `(n, d)` from the leaf values `key -> (n, d)`."""
    if not isinstance(node, Sum):
        return values[node.key]
    return l2_normalize(sum(c * materialize(child, values) for c, child in node.terms))


def gram(leaf_values_nld: np.ndarray) -> np.ndarray:
    """Per-item Gram matrices `(n, L, L)` of leaf vectors `(n, L, d)`."""
    x = leaf_values_nld.astype(np.float64)
    return np.einsum("nld,nmd->nlm", x, x)


def coefficients(node: Node, leaf_index: dict[str, int], gram_nll: np.ndarray) -> np.ndarray:
    """Weights `(n, L)` such that the plan's vector of item i is `sum_l a[i, l] * leaf_l(i)`.

    Normalisations inside the plan depend on each item's own vectors; its Gram matrix gives every
    norm needed, so the plan is evaluated without the vectors themselves. Raises KeyError when the
    plan needs a leaf that is not in `leaf_index`.
    """
    a = _coefficients(node, leaf_index, gram_nll)
    return a if a.ndim == 2 else np.tile(a, (gram_nll.shape[0], 1))  # a fresh array either way


def _coefficients(node: Node, leaf_index: dict[str, int], gram_nll: np.ndarray) -> np.ndarray:
    """`(L,)` while the weights are the same for every item (a leaf, or a sum before its normalisation),
    else `(n, L)`: a search re-scores a few dozen candidates per query, where per-item copies of
    constant rows cost more than the arithmetic."""
    if not isinstance(node, Sum):
        out = np.zeros(len(leaf_index))
        out[leaf_index[node.key]] = 1.0
        return out
    a = sum(c * _coefficients(child, leaf_index, gram_nll) for c, child in node.terms)
    if a.ndim == 1:
        squared_n = np.einsum("l,nlm,m->n", a, gram_nll, a)
        return a[None, :] / np.sqrt(np.maximum(squared_n, 1e-24))[:, None]
    squared_n = np.einsum("nl,nlm,nm->n", a, gram_nll, a)
    return a / np.sqrt(np.maximum(squared_n, 1e-24))[:, None]
