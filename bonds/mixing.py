"""Per-request mixing: the validated request object and its resolution against a space. The formulas a
mixing's factors enter are written out on plain arrays in bonds.reference.

A `Mixing` says which preset to start from, per-bond per-modality factors f in [0, 1] (f always
weights the *projected* term), which bonds or experts are off, and per-expert pooling weights of a
parallel bond. `resolve_mixing` turns it into a complete `ResolvedMixing` or raises a `MixingError`
that lists the valid choices.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bonds.errors import MixingError


class Mixing(BaseModel):
    """What a request may say about mixing; every field optional."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(None, description="named factor set shipped with the space")
    factors: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="bond -> modality -> f in [0, 1]; f weights the projected term"
    )
    off: list[str] = Field(default_factory=list, description="bonds ('bond') or experts ('bond/expert') to skip")
    weights: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="parallel bond -> expert -> pooling weight >= 0 (default 1 each: one mean over every head of "
                    "every expert)"
    )


@dataclass(frozen=True)
class BondControls:
    """What one bond of a space lets a mixing set."""

    name: str
    kind: str
    modalities: tuple[str, ...]  # modalities that have a factor (present on both sides)
    experts: tuple[str, ...]
    defaults: Mapping[str, float]
    default_weights: Mapping[str, float] = field(default_factory=dict)  # pooling weights; a combination's only


@dataclass(frozen=True)
class ResolvedMixing:
    factors: dict[str, dict[str, float]]
    off: frozenset[str] = frozenset()
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    preset: str | None = None

    def factor(self, bond: str, modality: str) -> float:
        return self.factors.get(bond, {}).get(modality, 0.0)

    def is_off(self, bond: str, expert: str | None = None) -> bool:
        return bond in self.off or (expert is not None and f"{bond}/{expert}" in self.off)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "factors": self.factors, "off": sorted(self.off), "weights": self.weights}

    def canonical(self) -> str:
        """Preset-independent JSON: two mixings that compute the same thing serialise the same."""
        body = {"factors": self.factors, "off": sorted(self.off), "weights": self.weights}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def check_factor(where: str, value: float) -> float:
    if not isinstance(value, int | float) or not np.isfinite(value) or not 0.0 <= float(value) <= 1.0:
        raise MixingError(f"{where} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_bond(name: str, controls: Mapping[str, BondControls], where: str) -> BondControls:
    if name not in controls:
        valid = ", ".join(controls) or "(this space has no bonds)"
        raise MixingError(f"{where} names unknown bond {name!r}; valid bonds: {valid}")
    return controls[name]


def resolve_mixing(
    mixing: Mixing | Mapping[str, Any] | None,
    controls: Mapping[str, BondControls],
    presets: Mapping[str, Mapping[str, Mapping[str, float]]],
    default_preset: str | None = None,
) -> ResolvedMixing:
    """Defaults <- preset <- request factors, default pooling weights <- request weights; validates every
    name and value. The result holds every factor and weight in effect, so its canonical form (and the
    fingerprint) changes whenever the vectors would."""
    if mixing is None:
        mixing = Mixing()
    elif not isinstance(mixing, Mixing):
        try:
            mixing = Mixing.model_validate(mixing)
        except ValidationError as exc:
            raise MixingError(f"invalid mixing: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None
    factors = {name: dict(c.defaults) for name, c in controls.items()}
    preset = mixing.preset if mixing.preset is not None else default_preset
    if preset is not None:
        if preset not in presets:
            valid = ", ".join(presets) or "(this space has no presets)"
            raise MixingError(f"unknown preset {preset!r}; valid presets: {valid}")
        _apply_factors(factors, presets[preset], controls, f"preset {preset!r}")
    _apply_factors(factors, mixing.factors, controls, "factors")
    off = set()
    for entry in mixing.off:
        bond, slash, expert = entry.partition("/")
        c = _check_bond(bond, controls, "off")
        if slash and expert not in c.experts:
            raise MixingError(f"off names unknown expert {expert!r} of bond {bond!r}; valid: {', '.join(c.experts)}")
        off.add(entry)
    weights = {name: dict(c.default_weights) for name, c in controls.items() if c.default_weights}
    for bond, per_expert in mixing.weights.items():
        c = _check_bond(bond, controls, "weights")
        if not c.default_weights:
            raise MixingError(
                f"weights name bond {bond!r}, a {c.kind} bond: only combination bonds pool experts by weight")
        for expert, w in per_expert.items():
            if expert not in c.experts:
                raise MixingError(
                    f"weights name unknown expert {expert!r} of bond {bond!r}; valid: {', '.join(c.experts)}")
            if not isinstance(w, int | float) or not np.isfinite(w) or w < 0:
                raise MixingError(f"weight of {bond}/{expert} must be a finite number >= 0, got {w!r}")
            weights.setdefault(bond, {})[expert] = float(w)
    return ResolvedMixing(factors=factors, off=frozenset(off), weights=weights, preset=preset)


def _apply_factors(factors: dict, given: Mapping[str, Mapping[str, float]], controls, where: str) -> None:
    for bond, per_modality in given.items():
        c = _check_bond(bond, controls, where)
        if not isinstance(per_modality, Mapping):
            raise MixingError(f"{where}[{bond!r}] must map modality -> factor, got {per_modality!r}")
        for modality, value in per_modality.items():
            if modality not in c.modalities:
                valid = ", ".join(c.modalities) or "(none: this bond has no mixable modality)"
                raise MixingError(f"{where}[{bond!r}] names modality {modality!r}; valid: {valid}")
            factors[bond][modality] = check_factor(f"{where}[{bond!r}][{modality!r}]", value)
