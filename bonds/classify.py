"""Zero-shot classification over description-augmented class centers (UniBind).

Each label owns one or more *centers*: the embeddings of descriptions of it ("a photo of a tench.",
"tench: freshwater dace-like game fish of Europe ..."). A query is scored against every center and a
label's score is the max over its centers (UniBind's released code) or their mean. With `max` the
matched description says *why* a label won; with `mean` it is the label's closest center, for the same
reason. Everything here is pure array math; embedding the descriptions is the caller's business.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from bonds.errors import UnknownNameError

AGGREGATIONS = ("max", "mean")


@dataclass(frozen=True)
class LabelSet:
    """Labels and their descriptions, flattened: description `j` belongs to label `owner[j]`."""

    labels: list[str]
    descriptions: list[str]
    owner: np.ndarray  # (m,) int64, label index of each description

    @classmethod
    def from_mapping(cls, described: Mapping[str, Sequence[str]]) -> LabelSet:
        """`{label: [description, ...]}`; every label needs at least one non-empty description."""
        return cls.from_entries(list(described.items()))

    @classmethod
    def from_entries(cls, entries: Sequence[tuple[str, Sequence[str]]]) -> LabelSet:
        """`[(label, [description, ...]), ...]`: keeps order and repeated names (ImageNet has two "missile")."""
        labels, descriptions, owner = [], [], []
        for k, (label, texts) in enumerate(entries):
            if isinstance(texts, str):
                texts = [texts]
            texts = [t for t in texts if isinstance(t, str) and t.strip()]
            if not texts:
                raise ValueError(f"label {label!r} has no description")
            labels.append(str(label))
            descriptions.extend(texts)
            owner.extend([k] * len(texts))
        if not labels:
            raise ValueError("a label set needs at least one label")
        return cls(labels, descriptions, np.asarray(owner, dtype=np.int64))

    @classmethod
    def from_names(cls, names: Sequence[str], templates: Sequence[str] = ("{}",)) -> LabelSet:
        """One description per template per name, names kept in order (a repeated one too, so positions
        stay the caller's); a template holds `{}` where the name goes, once or more."""
        slots = [_name_slots(template) for template in templates]
        return cls.from_entries([(name, [t.format(*[name] * n) for t, n in zip(templates, slots, strict=True)])
                                 for name in names])


def _name_slots(template: str) -> int:
    """How many `{}` a template holds; ValueError for none, for a named or numbered field, or bad braces."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc}") from None
    if not fields:
        raise ValueError(f"template {template!r} has no '{{}}' for the label name")
    other = next((f for f in fields if f != ""), None)
    if other is not None:
        raise ValueError(f"template {template!r} has field {{{other}}}; only '{{}}' is filled (with the label name)")
    return len(fields)


def _labelset_folder():
    return resources.files("bonds").joinpath("data", "labelsets")


def list_labelsets() -> list[str]:
    """Names of the label sets shipped as package data."""
    folder = _labelset_folder()
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_labelset(name: str) -> LabelSet:
    """A shipped label set by name (e.g. `imagenet1k`); an unknown name lists the valid ones."""
    shipped = list_labelsets()
    if name not in shipped:
        raise UnknownNameError(f"unknown label set {name!r}; valid: {', '.join(shipped) or '(none shipped)'}")
    data = json.loads(_labelset_folder().joinpath(f"{name}.json").read_text(encoding="utf-8"))
    if isinstance(data, Mapping):
        return LabelSet.from_mapping(data)
    return LabelSet.from_entries([(entry["label"], entry["descriptions"]) for entry in data])


def center_table(owner_m: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Label -> its description indices as a padded `(K, P)` table and a `(K, P)` validity mask."""
    owner_m = np.asarray(owner_m, dtype=np.int64)
    if owner_m.ndim != 1 or (owner_m < 0).any() or (owner_m >= n_labels).any():
        raise ValueError(f"owner must be a vector of label indices in [0, {n_labels})")
    counts_k = np.bincount(owner_m, minlength=n_labels)
    if (counts_k == 0).any():
        raise ValueError(f"label {int(np.argmin(counts_k))} has no center")
    order_m = np.argsort(owner_m, kind="stable")
    starts_k = np.concatenate([[0], np.cumsum(counts_k)[:-1]])
    slot_p = np.arange(counts_k.max())
    valid_kp = slot_p[None, :] < counts_k[:, None]
    table_kp = order_m[np.minimum(starts_k[:, None] + slot_p[None, :], len(owner_m) - 1)]
    return np.where(valid_kp, table_kp, 0), valid_kp


def class_scores(
    query_nd: np.ndarray, centers_md: np.ndarray, owner_m: np.ndarray, n_labels: int, aggregate: str = "max"
) -> tuple[np.ndarray, np.ndarray]:
    """Label scores `(n, K)` and the matched description index `(n, K)` (into the centers).

    `query_nd` and `centers_md` are unit-norm rows of one space, so scores are cosine similarities.
    """
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATIONS)}, got {aggregate!r}")
    query_nd = np.atleast_2d(np.asarray(query_nd, dtype=np.float32))
    centers_md = np.asarray(centers_md, dtype=np.float32)
    if query_nd.shape[1] != centers_md.shape[1]:
        raise ValueError(f"query dim {query_nd.shape[1]} != center dim {centers_md.shape[1]}")
    if len(owner_m) != len(centers_md):
        raise ValueError(f"{len(owner_m)} owners for {len(centers_md)} centers")
    table_kp, valid_kp = center_table(owner_m, n_labels)
    sims_nkp = (query_nd @ centers_md.T)[:, table_kp]
    masked_nkp = np.where(valid_kp[None], sims_nkp, -np.inf)
    best_nk = np.argmax(masked_nkp, axis=-1)
    matched_nk = table_kp[np.arange(n_labels)[None, :], best_nk]
    if aggregate == "max":
        scores_nk = np.take_along_axis(masked_nkp, best_nk[..., None], axis=-1)[..., 0]
    else:
        scores_nk = np.where(valid_kp[None], sims_nkp, 0.0).sum(-1) / valid_kp.sum(-1)[None, :]
    return scores_nk.astype(np.float32), matched_nk


def top_labels(scores_nk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(n, k)` of the k best labels per query, best first, and their scores."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, scores_nk.shape[1])
    # one stable sort: tied labels come in label order (argpartition first would pick arbitrary ones among
    # those tied at the cut, and ImageNet has two identical "missile" labels); a few thousand labels sort fast
    idx_nk = np.argsort(-scores_nk, axis=1, kind="stable")[:, :k]
    return idx_nk, np.take_along_axis(scores_nk, idx_nk, axis=1)
