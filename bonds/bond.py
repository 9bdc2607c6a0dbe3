"""Bonds: spaces built from other spaces with trained projectors (FreeBind, ICML 2024).

- `DisplacementBond` remaps a base space into an expert space (the result lives in the expert's space).
- `CombinationBond` projects one or more experts into the base space (the result lives in the base's);
  several experts make it a parallel bond: every head of every expert pooled in one mean, each expert's
  heads weighted by the expert's weight (1 by default).
Both are `Space`s, so bonds compose in sequence with no special case. f always weights the projected
term; factor 0 drops the projected side and its encoders never run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bonds.errors import DimensionError, ModalityError
from bonds.mixing import BondControls, ResolvedMixing
from bonds.plan import Node, Project, weighted
from bonds.projector import ProjectorMixture, weights_checksum
from bonds.space import EncoderSpace, Space


def _check_projector(bond: str, projector: ProjectorMixture, d_in: int, d_out: int, what: str) -> None:
    if (projector.d_in, projector.d_out) != (d_in, d_out):
        raise DimensionError(
            f"bond {bond!r}: {what} projector maps {projector.d_in}->{projector.d_out}, "
            f"but the spaces need {d_in}->{d_out}"
        )


class _Bond(Space):
    kind: str

    def __init__(self, name: str, base: Space, presets=None, default_preset: str | None = None):
        self.name = name  # the space's name; a description file may rename the outermost space
        self.bond_name = name  # the name mixings use; never changes
        self.base = base
        self.presets = dict(presets or {})
        self.default_preset = default_preset

    def encoder_spaces(self) -> dict[str, EncoderSpace]:
        found = dict(self.base.encoder_spaces())
        for expert in self.expert_spaces().values():
            found.update(expert.encoder_spaces())
        return found

    def bonds(self) -> list[Any]:
        inner = list(self.base.bonds())
        for expert in self.expert_spaces().values():
            inner.extend(b for b in expert.bonds() if b not in inner)
        return [*inner, self]

    def expert_spaces(self) -> dict[str, Space]:
        raise NotImplementedError

    def own_projectors(self) -> dict[str, ProjectorMixture]:
        raise NotImplementedError

    def projected_bonds(self) -> list[str]:
        """Bonds inside this one whose output its projector reads: their mixing is baked into a leaf."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bond": self.bond_name,
            "kind": self.kind,
            "base": self.base.identity(),
            "experts": {n: e.identity() for n, e in self.expert_spaces().items()},
            "projectors": {pid: weights_checksum(p) for pid, p in self.own_projectors().items()},
        }

    def describe_bond(self) -> dict[str, Any]:
        c = self.bond_controls()
        return {"name": self.bond_name, "kind": self.kind, "experts": list(c.experts),
                "modalities": list(c.modalities), "defaults": dict(c.defaults)}


class DisplacementBond(_Bond):
    kind = "displacement"

    def __init__(self, name: str, base: Space, expert: Space, projector: ProjectorMixture,
                 factors: Mapping[str, float] | None = None, presets=None, default_preset=None,
                 expert_name: str | None = None):
        super().__init__(name, base, presets, default_preset)
        _check_projector(name, projector, base.dim, expert.dim, "the")
        self.expert = expert
        self.expert_name = expert_name or expert.name
        self.projector = projector
        self.dim = expert.dim
        self.modalities = tuple(dict.fromkeys([*expert.modalities, *base.modalities]))
        self.shared = tuple(m for m in self.modalities if m in base.modalities and m in expert.modalities)
        self.defaults = {m: float((factors or {}).get(m, 0.0)) for m in self.shared}

    def expert_spaces(self) -> dict[str, Space]:
        return {self.expert_name: self.expert}

    def own_projectors(self) -> dict[str, ProjectorMixture]:
        return {f"{self.bond_name}/{self.expert_name}": self.projector}

    def projected_bonds(self) -> list[str]:
        return [b.bond_name for b in self.base.bonds()]

    def bond_controls(self) -> BondControls:
        return BondControls(self.bond_name, self.kind, self.shared, (self.expert_name,), self.defaults)

    def plan(self, modality: str, mixing: ResolvedMixing) -> Node:
        self.check_modality(modality)
        if modality not in self.base.modalities:
            if mixing.is_off(self.bond_name, self.expert_name):
                raise ModalityError(f"space {self.name!r} reaches {modality!r} only through expert "
                                    f"{self.expert_name!r}, which this mixing switches off")
            return self.expert.plan(modality, mixing)
        projected = weighted([(1.0, Project(f"{self.bond_name}/{self.expert_name}", self.base.plan(modality, mixing)))])
        if modality not in self.expert.modalities:
            return projected  # the only route into the expert space: on whatever the mixing says
        f = 0.0 if mixing.is_off(self.bond_name) else mixing.factor(self.bond_name, modality)
        if mixing.is_off(self.bond_name, self.expert_name) and f > 0.0:
            return projected  # the expert's own term is skipped, so its encoder never runs
        if f == 0.0:
            return self.expert.plan(modality, mixing)
        if f == 1.0:
            return projected
        return weighted([(f, projected), (1.0 - f, self.expert.plan(modality, mixing))])


class CombinationBond(_Bond):
    kind = "combination"

    def __init__(self, name: str, base: Space, experts: Mapping[str, Space],
                 projectors: Mapping[str, ProjectorMixture], factors: Mapping[str, float] | None = None,
                 weights: Mapping[str, float] | None = None, presets=None, default_preset=None):
        super().__init__(name, base, presets, default_preset)
        if not experts:
            raise ValueError(f"combination bond {name!r} needs at least one expert")
        if set(experts) != set(projectors):
            raise ValueError(f"bond {name!r}: experts {sorted(experts)} and projectors {sorted(projectors)} differ")
        for expert_name, expert in experts.items():
            _check_projector(name, projectors[expert_name], expert.dim, base.dim, f"expert {expert_name!r}'s")
        self.experts = dict(experts)
        self.projectors_by_expert = dict(projectors)
        self.default_weights = {e: float((weights or {}).get(e, 1.0)) for e in experts}
        self.dim = base.dim
        expert_modalities = [m for e in experts.values() for m in e.modalities]
        self.modalities = tuple(dict.fromkeys([*base.modalities, *expert_modalities]))
        self.shared = tuple(m for m in base.modalities if m in expert_modalities)
        self.defaults = {m: float((factors or {}).get(m, 0.0)) for m in self.shared}

    def expert_spaces(self) -> dict[str, Space]:
        return dict(self.experts)

    def own_projectors(self) -> dict[str, ProjectorMixture]:
        return {f"{self.bond_name}/{e}": p for e, p in self.projectors_by_expert.items()}

    def projected_bonds(self) -> list[str]:
        return [b.bond_name for expert in self.experts.values() for b in expert.bonds()]

    def bond_controls(self) -> BondControls:
        return BondControls(self.bond_name, self.kind, self.shared, tuple(self.experts), self.defaults,
                            self.default_weights)

    def pooled(self, modality: str, mixing: ResolvedMixing) -> Node | None:
        """n(sum_j w_j * H_j * mean-of-heads_j) over the experts that are on and have the modality: with
        H_j expert j's head count, one mean over all heads of all experts (method.md), weighted per expert.

        The weights are divided by the largest one first: n() makes the result the same, and a weight of
        1e39 (finite in float64) would otherwise overflow the float32 vectors it scales into inf and NaN,
        a weight of 5e-324 underflow them to zero. With the default weights (all 1) nothing changes."""
        chosen = []
        for expert_name, expert in self.experts.items():
            if modality not in expert.modalities or mixing.is_off(self.bond_name, expert_name):
                continue
            w = mixing.weights.get(self.bond_name, {}).get(expert_name, self.default_weights[expert_name])
            if w > 0:
                chosen.append((w, expert_name, expert))
        largest = max((w for w, _, _ in chosen), default=1.0)
        terms = [(w / largest * len(self.projectors_by_expert[name].heads),
                  Project(f"{self.bond_name}/{name}", expert.plan(modality, mixing))) for w, name, expert in chosen]
        return weighted(terms) if terms else None

    def plan(self, modality: str, mixing: ResolvedMixing) -> Node:
        self.check_modality(modality)
        bond_on = not mixing.is_off(self.bond_name)
        if modality not in self.base.modalities:
            pooled = self.pooled(modality, mixing) if bond_on else None
            if pooled is None:
                raise ModalityError(
                    f"space {self.name!r} reaches {modality!r} only through bond {self.bond_name!r}, "
                    "which this mixing switches off"
                )
            return pooled
        f = mixing.factor(self.bond_name, modality) if bond_on and modality in self.shared else 0.0
        pooled = self.pooled(modality, mixing) if f > 0 else None
        if pooled is None:
            return self.base.plan(modality, mixing)
        if f == 1.0:
            return pooled
        return weighted([(1.0 - f, self.base.plan(modality, mixing)), (f, pooled)])
