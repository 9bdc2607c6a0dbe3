"""The service tests' tiny bonded space on disk: a 16-d `tiny` base (text, image, audio) with a combination
bond `aux` from an 8-d `tiny` expert (text, audio), its projector saved as a real checkpoint folder, and a
preset. Shared by the in-process service tests, the real-server reliability tests and bench/soak.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from bonds.checkpoint import save_bond_checkpoint
from bonds.projector import ProjectorConfig, ProjectorMixture

SPACE = "tiny_bonded"
DIM = 16


def write_space(folder: Path) -> Path:
    """Write the space (and its checkpoint) under `folder`; returns the space file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    projector = ProjectorMixture(ProjectorConfig(8, DIM, hidden=32, heads=("mix",))).eval()
    save_bond_checkpoint(folder / "checkpoints" / "aux_into_base", projector, kind="combination",
                         source={"id": "aux", "dim": 8}, target={"id": "base", "dim": DIM},
                         modalities=["text", "audio"])
    description = {
        "format_version": 1,
        "name": SPACE,
        "encoders": {
            "base": {"kind": "tiny", "options": {"dim": DIM, "seed": 0, "name": "base"}},
            "aux": {"kind": "tiny", "options": {"dim": 8, "seed": 1, "modalities": ["text", "audio"], "name": "aux"}},
        },
        "base": "base",
        "bonds": [{"name": "aux", "kind": "combination",
                   "experts": {"aux": {"checkpoint": "checkpoints/aux_into_base"}},
                   "factors": {"text": 0.3, "audio": 0.5}}],
        "presets": {"strong": {"aux": {"text": 0.8, "audio": 0.8}}},
    }
    path = folder / f"{SPACE}.yaml"
    path.write_text(yaml.safe_dump(description))
    return path
