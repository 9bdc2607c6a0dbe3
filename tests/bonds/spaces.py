"""Tiny spaces for the bond tests: tiny encoders, small random projectors."""

from __future__ import annotations

import torch

from bonds.bond import CombinationBond, DisplacementBond
from bonds.encoders import create_encoder
from bonds.projector import ProjectorConfig, ProjectorMixture
from bonds.space import EncoderSpace


def encoder_space(name: str, dim: int, seed: int, modalities=("text", "image", "audio")) -> EncoderSpace:
    return EncoderSpace(create_encoder("tiny", dim=dim, seed=seed, modalities=modalities, name=name), name=name)


def projector(d_in: int, d_out: int, heads=("mix", "A", "T"), seed: int = 0) -> ProjectorMixture:
    torch.manual_seed(seed)
    mixture = ProjectorMixture(ProjectorConfig(d_in, d_out, hidden=32, heads=tuple(heads)))
    # Random BatchNorm statistics, so eval mode is not the identity and the test sees them used.
    for head in mixture.heads.values():
        for bn in (head.mlps[1], head.mlps[4]):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.normal_(0, 0.1)
    return mixture.eval()


def parallel_combination(f_text=0.3, f_audio=0.6):
    """base (text, image, audio; 16-d) + combination of two experts (text+audio 8-d, text 12-d)."""
    base = encoder_space("base", 16, 0)
    clap_g = encoder_space("clap_g", 8, 1, ("text", "audio"))
    clap_m = encoder_space("clap_m", 12, 2, ("text",))
    bond = CombinationBond(
        "clap", base, {"clap_g": clap_g, "clap_m": clap_m},
        {"clap_g": projector(8, 16, seed=1), "clap_m": projector(12, 16, heads=("mix",), seed=2)},
        factors={"text": f_text, "audio": f_audio},
        presets={"versatile": {"clap": {"text": 0.1, "audio": 0.5}},
                 "at_expertise": {"clap": {"text": 0.5, "audio": 0.8}}},
    )
    return base, clap_g, clap_m, bond


def displacement(f=0.2):
    """base (text, image, audio; 16-d) displaced into an expert (text, image; 10-d)."""
    base = encoder_space("base", 16, 0)
    expert = encoder_space("internvl", 10, 3, ("text", "image"))
    bond = DisplacementBond("internvl", base, expert, projector(16, 10, seed=3), factors={"text": f, "image": f})
    return base, expert, bond
