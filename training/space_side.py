"""The bonded side of an evaluation computed by the space that serves the bond, from a work folder's embeddings.

A bond alone is scored with its own formula (training.evaluate.Leaves). A served space may hold more than the
bond: `starter_in_e5` runs text through the `e5_into_starter` combination before displacing it into e5's space.
`--space FILE` scores that space instead: its description's bonds in order, evaluated by the library's own plan
evaluation (bonds.space), with the work folder's embeddings standing in for its encoders (each encoder of the
description must be a space of the work folder, by name). The evaluated bond is the one whose projector has
the evaluated weights; the sweep sets its factor on the scored modality, every other bond stays as the
space's default preset has it, so preset rows are points of the sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from bonds.encoders.base import Encoded, Encoder
from bonds.plan import encoder_leaves
from bonds.projector import ProjectorMixture
from bonds.space import Space
from training.conse import TOPK
from training.embed import read_space_info


class SpaceSide:
    """A served space around one of its bonds: the vectors of a pool under a sweep of that bond's factor."""

    def __init__(self, space: Space, projector: ProjectorMixture, path: Path | str = "",
                 spaces: Mapping[str, str] | None = None):
        """`spaces`: the work folder space of each of the description's encoders, where the names differ."""
        self.space, self.where, self.spaces = space, str(path or space.name), dict(spaces or {})
        serving = [b for b in space.bonds() if any(_same_weights(p, projector) for p in b.own_projectors().values())]
        if not serving:
            names = ", ".join(b.bond_name for b in space.bonds()) or "none"
            raise ValueError(f"{self.where}: no bond of space {space.name!r} has the evaluated projector's weights "
                             f"(its bonds: {names}); give the description whose checkpoint is the one evaluated")
        self.bond = serving[0].bond_name
        self.controls = space.controls()[self.bond]

    def conse_topk(self, space: str) -> int | None:
        """How many classes the description's encoder standing on work folder `space` mixes into a ConSE
        photo (its `topk`); None where its photos are not ConSE, or no encoder stands there."""
        found = [s.encoder.conse_topk for s in self.space.encoder_spaces().values()
                 if isinstance(s.encoder, Embedded) and s.encoder.space == space]
        return found[0] if found else None

    def summary(self) -> dict:
        """What a report records of the space it was scored in."""
        return {"name": self.space.name, "file": self.where, "bonds": [b.bond_name for b in self.space.bonds()],
                "swept": self.bond, "default_preset": self.space.default_preset}

    def mixing(self, modality: str, f: float | None = None, preset: str | None = None):
        """The default preset (or `preset`), with the evaluated bond's text factor set to `f`. The sweep moves
        text alone, whichever modality is scored: a photo keeps its preset mixing while the names it is
        classified among move (a bond whose expert embeds photos too has an image factor of its own)."""
        factors = {self.bond: {"text": f}} if f is not None and "text" in self.controls.modalities else {}
        return self.space.resolve({"preset": preset, "factors": factors})

    def vectors(self, modality: str, embedded: Callable[[str], np.ndarray], f: float | None = None) -> np.ndarray:
        """The space's vectors of one pool: `embedded(encoder name)` gives that encoder's rows of the pool."""
        mixing = self.mixing(modality, f)
        plan = self.space.plan(modality, mixing)
        outputs = {leaf.key: Encoded(embedded(self.spaces.get(leaf.space, leaf.space)))
                   for leaf in encoder_leaves(plan)}
        return self.space.evaluate(plan, outputs, mixing).vectors

    def preset_factors(self, modality: str = "text") -> dict[str, float]:
        """{preset name: the evaluated bond's factor on `modality`}, the default preset marked. A preset that
        moves another bond away from the default preset is not a point of the sweep, and is refused."""
        default = self.space.default_preset
        base = self.space.resolve({"preset": default})
        found = {}
        for name in self.space.presets:
            resolved = self.space.resolve({"preset": name})
            if _beside(resolved.factors, self.bond) != _beside(base.factors, self.bond) or resolved.off != base.off:
                raise ValueError(f"{self.where}: preset {name!r} changes more than {self.bond!r}'s text factor from "
                                 f"the default preset {default!r}, so it is no point of {self.bond!r}'s sweep")
            found[name + (" (default)" if name == default else "")] = resolved.factor(self.bond, modality)
        return found


def _beside(factors: dict[str, dict[str, float]], bond: str) -> dict:
    """Every factor of a mixing but `bond`'s text factor, the one the sweep moves."""
    return {b: {m: v for m, v in per.items() if (b, m) != (bond, "text")} for b, per in factors.items()}


def _same_weights(a: ProjectorMixture, b: ProjectorMixture) -> bool:
    """Equal tensors, compared as loaded (a checkpoint's checksum is its file's, which a fit in memory lacks)."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k].float(), sb[k].float())
                                          for k in sa)


class Embedded(Encoder):
    """A work folder space standing in for a description's encoder: its name, dim and modalities, never run
    (the vectors are the work folder's)."""

    def __init__(self, workdir: Path, name: str, space: str | None = None, conse_images: bool = False,
                 conse_topk: int | None = None):
        """`conse_images`: the encoder embeds photos as ConSE (the e5 encoder's option of that name), which a
        work folder space of text alone stands in for from its posteriors (training.conse.conse_vectors);
        `conse_topk`: how many classes the encoder's ConSE photos mix (its `topk`), None if not ConSE."""
        self.space = space or name
        info = read_space_info(workdir, self.space)
        self.name, self.dim, self.modalities = name, int(info["dim"]), tuple(info["modalities"])
        self.conse_topk = conse_topk
        if conse_images and "image" not in self.modalities:
            self.modalities = (*self.modalities, "image")

    def preprocess(self, modality: str, items):
        raise RuntimeError(f"space {self.name!r} stands in for an encoder: its vectors come from the work folder")

    forward = preprocess


def load_side(path: Path | str, projector: ProjectorMixture, workdir: Path, available: Iterable[str],
              spaces: Mapping[str, str] | None = None) -> SpaceSide:
    """The space a description file describes, its encoders replaced by the work folder's spaces of the same
    names, or the ones `spaces` maps them to (none is built or run), around the evaluated bond."""
    from bonds.description import load_space, read_description
    from bonds.errors import FreeBindError

    try:
        spaces = dict(spaces or {})
        encoders = read_description(Path(path)).get("encoders") or {}
        names = {name: spaces.get(name, name) for name in encoders}
        missing = sorted(set(names.values()) - set(available))
        if missing:
            raise ValueError(f"{path}: encoder(s) {', '.join(missing)} are not spaces of the work folder (it has "
                             f"{', '.join(sorted(available))}); the description must name its encoders alike")
        options = {name: (spec or {}).get("options") or {} for name, spec in encoders.items()}
        conse_images = {name: bool(options[name].get("conse_images")) for name in encoders}
        # photos made from posteriors stand in for ConSE encoders' (the starter's, e5's with conse_images)
        topk = {name: int(options[name].get("topk", TOPK))
                if conse_images[name] or (spec or {}).get("kind") == "starter" else None
                for name, spec in encoders.items()}
        for name, space in names.items():  # the starter's photos in the work folder were embedded at its topk
            spec = read_space_info(workdir, space)["spec"]
            held = int((spec.get("options") or {}).get("topk", TOPK))
            if spec.get("encoder") == "starter" and topk[name] not in (None, held):
                raise ValueError(f"{path}: encoder {name!r} serves photos with topk {topk[name]}, but the work "
                                 f"folder's space {space!r} embedded them with topk {held}; embed them again with "
                                 f"--encoder-option topk={topk[name]}, or give the description topk {held}")
        space = load_space(path, encoders={name: Embedded(workdir, name, space, conse_images[name], topk[name])
                                           for name, space in names.items()})
    except FreeBindError as exc:
        raise ValueError(str(exc)) from None
    return SpaceSide(space, projector, path, spaces)
