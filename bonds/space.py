"""The one protocol every embedding space implements, and the space made of a single encoder.

`Space.embed(modality, items, mixing)` returns `(n, dim)` float32 rows of unit norm. Encoder spaces
and bonded spaces (bonds.bond) both implement it, so a bonded space can be the base or the expert of
another bond with no special case. Subclasses only say how to *plan* an embedding (bonds.plan);
evaluation is shared here, in two steps a server can take apart: `run_encoders` (each encoder the plan
needs runs once, however many bonds use it) and `evaluate` (the bond math over those outputs).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bonds.encoders.base import Encoded, Encoder
from bonds.errors import ModalityError
from bonds.items import as_items
from bonds.mixing import BondControls, Mixing, ResolvedMixing, resolve_mixing
from bonds.plan import Encode, Leaf, Node, Project, encoder_leaves, gram, leaves, materialize
from bonds.projector import ProjectorMixture


@dataclass
class Embedding:
    vectors: np.ndarray  # (n, dim) float32, rows unit-norm
    notes: list[str | None]  # per item, from encoders (e.g. "no speech detected")
    mixing: ResolvedMixing
    fingerprint: str  # identifies space + resolved mixing: only compare vectors with equal fingerprints


@dataclass
class Components:
    """What an index stores to re-mix an item at search time: its leaf vectors and their Gram matrix."""

    modality: str
    keys: list[str]  # leaf keys, in order
    leaves: np.ndarray  # (n, L, dim): every leaf of a plan lives in the space's dimension
    gram: np.ndarray  # (n, L, L) float64
    notes: list[str | None]


class Space(ABC):
    """An embedding space: `name`, `dim`, `modalities`, `embed`."""

    name: str
    dim: int
    modalities: tuple[str, ...]
    presets: dict[str, dict[str, dict[str, float]]]
    default_preset: str | None = None

    # --- what subclasses provide --------------------------------------------------------------
    @abstractmethod
    def plan(self, modality: str, mixing: ResolvedMixing) -> Node:
        """The expression whose value is this space's embedding of `modality` under `mixing`."""

    @abstractmethod
    def encoder_spaces(self) -> dict[str, EncoderSpace]:
        """Every encoder space in this space's tree, by name."""

    def bonds(self) -> list[Any]:
        """Every bond in this space's tree, innermost first."""
        return []

    def projectors(self) -> dict[str, ProjectorMixture]:
        return {pid: p for bond in self.bonds() for pid, p in bond.own_projectors().items()}

    def identity(self) -> dict[str, Any]:
        """Everything that determines the vectors apart from the mixing (hashed into fingerprints)."""
        return {"name": self.name, "dim": self.dim}

    # --- shared behaviour ---------------------------------------------------------------------
    def controls(self) -> dict[str, BondControls]:
        return {b.bond_name: b.bond_controls() for b in self.bonds()}

    def resolve(self, mixing: Mixing | Mapping[str, Any] | ResolvedMixing | None = None) -> ResolvedMixing:
        if isinstance(mixing, ResolvedMixing):
            return mixing
        return resolve_mixing(mixing, self.controls(), getattr(self, "presets", {}) or {}, self.default_preset)

    def check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ModalityError(
                f"space {self.name!r} does not embed {modality!r}; it embeds {', '.join(self.modalities)}"
            )

    def space_id(self) -> str:
        """Stable id of the space without any mixing (computed once: spaces do not change once built)."""
        cached = getattr(self, "_space_id", None)
        if cached is None or cached[0] != self.name:  # a description file may rename the outer space
            blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
            cached = self._space_id = (self.name, hashlib.sha256(blob).hexdigest()[:16])
        return cached[1]

    def fingerprint(self, mixing: Mixing | Mapping[str, Any] | ResolvedMixing | None = None) -> str:
        resolved = self.resolve(mixing)
        blob = f"{self.space_id()}|{resolved.canonical()}".encode()
        return f"{self.name}@{hashlib.sha256(blob).hexdigest()[:16]}"

    def encode(self, modality: str, items: Sequence[Any], mixing=None) -> Embedding:
        """`items` (see `embed`) under `mixing`: vectors, per-item notes, the resolved mixing, the fingerprint."""
        self.check_modality(modality)
        items = as_items(modality, items)
        resolved = self.resolve(mixing)
        plan = self.plan(modality, resolved)
        return self.evaluate(plan, self.run_encoders(plan, items), resolved)

    def embed(self, modality: str, items: Sequence[Any], mixing=None) -> np.ndarray:
        """`(n, dim)` float32 unit rows of `items` under `mixing` (a preset name, factors, off, weights).

        Items: text `str`; images as `PIL.Image.Image`, file paths or the files' bytes; audio as
        `Audio(samples, sample_rate)`, file paths or bytes (WAV, FLAC, OGG, MP3).
        `space.embed("image", ["dog.jpg"], {"preset": "multilingual"})`.
        """
        return self.encode(modality, items, mixing).vectors

    def run_encoders(self, plan: Node, items: Sequence[Any]) -> dict[str, Encoded]:
        """Every encoder output `plan` needs, by leaf key. A caller that runs encoders its own way (a server
        batching them across requests) computes this map itself and hands it to `evaluate`."""
        spaces = self.encoder_spaces()
        return {leaf.key: spaces[leaf.space].encoder.encode(leaf.modality, items) for leaf in encoder_leaves(plan)}

    def evaluate(self, plan: Node, outputs: Mapping[str, Encoded], mixing: ResolvedMixing) -> Embedding:
        """The plan's vectors from its encoder outputs (`run_encoders`' map): the bond math, nothing else."""
        run = Evaluation(self.projectors(), outputs)
        return Embedding(run.value(plan).astype(np.float32), run.notes(), mixing, self.fingerprint(mixing))

    def full_mixing(self, mixing: Mixing | Mapping[str, Any] | ResolvedMixing | None = None) -> ResolvedMixing:
        """A mixing under which every leaf that `mixing` or any re-mix of it could use appears in the plan.

        Bonds on, every expert weighted, factors of exactly 0 or 1 moved to 0.5 (so both sides appear),
        other factors as `mixing` has them; except for bonds whose output a projector reads (a
        displacement's base, a combination's experts): their factors, offs and weights stay exactly
        as `mixing` has them, since a projection of a mix is a leaf that re-mixing cannot take apart.
        """
        given = self.resolve(mixing)
        projected = {name for bond in self.bonds() for name in bond.projected_bonds()}
        factors = {b: dict(per) if b in projected else {m: (0.5 if f in (0.0, 1.0) else f) for m, f in per.items()}
                   for b, per in given.factors.items()}
        weights = {b: dict(per) if b in projected else dict.fromkeys(per, 1.0) for b, per in given.weights.items()}
        off = frozenset(entry for entry in given.off if entry.partition("/")[0] in projected)
        return ResolvedMixing(factors=factors, off=off, weights=weights, preset=None)

    def components(self, modality: str, items: Sequence[Any],
                   mixing: Mixing | Mapping[str, Any] | ResolvedMixing | None = None) -> Components:
        """Leaf vectors of `items` under `full_mixing(mixing)`: enough to score them under `mixing` and any
        mixing that differs from it outside projected bonds (all mixings, for the usual shapes)."""
        self.check_modality(modality)
        items = as_items(modality, items)
        plan = self.plan(modality, self.full_mixing(mixing))
        return self.evaluate_components(modality, plan, self.run_encoders(plan, items))

    def evaluate_components(self, modality: str, plan: Node, outputs: Mapping[str, Encoded]) -> Components:
        """`components` from the encoder outputs of `plan`, a plan under `full_mixing(...)`."""
        run = Evaluation(self.projectors(), outputs)
        found = leaves(plan)
        stacked = np.stack([run.value(leaf) for leaf in found], axis=1).astype(np.float32)
        return Components(modality, [leaf.key for leaf in found], stacked, gram(stacked), run.notes())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "modalities": list(self.modalities),
            "space_id": self.space_id(),
            "bonds": [b.describe_bond() for b in self.bonds()],
            "presets": getattr(self, "presets", {}) or {},
            "default_preset": self.default_preset,
            "encoders": {name: s.encoder.info() for name, s in self.encoder_spaces().items()},
        }


class EncoderSpace(Space):
    """The space of one encoder: its plan is a single leaf."""

    def __init__(self, encoder: Encoder, name: str | None = None, identity: Mapping[str, Any] | None = None):
        self.encoder = encoder
        self.name = name or encoder.name
        self.dim = encoder.dim
        self.modalities = tuple(encoder.modalities)
        self.presets = {}
        self._identity = dict(identity or {"encoder": encoder.name})

    def plan(self, modality: str, mixing: ResolvedMixing) -> Node:
        self.check_modality(modality)
        return Encode(self.name, modality)

    def encoder_spaces(self) -> dict[str, EncoderSpace]:
        return {self.name: self}

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "encoder": self._identity}


class Evaluation:
    """One call's evaluation of plans over given encoder outputs: caches every projected leaf, so each
    projector runs at most once per source."""

    def __init__(self, projectors: Mapping[str, ProjectorMixture], outputs: Mapping[str, Encoded]):
        sizes = {key: len(encoded.vectors) for key, encoded in outputs.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"encoder outputs disagree on the number of items: {sizes}")
        self.projectors, self.outputs = projectors, outputs
        self.size = next(iter(sizes.values()), 0)
        self.cache: dict[str, np.ndarray] = {key: encoded.vectors for key, encoded in outputs.items()}

    def leaf(self, node: Leaf) -> np.ndarray:
        if node.key not in self.cache:
            if isinstance(node, Encode):
                raise KeyError(f"no output of encoder leaf {node.key!r} was given (given: {', '.join(self.outputs)})")
            source = self.value(node.source)
            self.cache[node.key] = self.projectors[node.projector].project(source, normalize=False)
        return self.cache[node.key]

    def value(self, node: Node) -> np.ndarray:
        if isinstance(node, Encode | Project):
            return self.leaf(node)
        for leaf in leaves(node):
            self.leaf(leaf)
        return materialize(node, self.cache)

    def notes(self) -> list[str | None]:
        """Per-item notes of every encoder output, joined."""
        merged: list[str | None] = [None] * self.size
        for encoded in self.outputs.values():
            for i, note in enumerate(encoded.notes):
                if note:
                    merged[i] = note if merged[i] is None or note in merged[i] else f"{merged[i]}; {note}"
        return merged
