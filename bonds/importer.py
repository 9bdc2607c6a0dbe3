"""Import the released FreeBind projector checkpoints into our checkpoint format.

Released layout: `checkpoints/<BOND>_Proj/{mix,A,T,V,AT,AV,TV}/best.pt`, each a plain state dict with
`Head2.mlps.{0,1,3,4}.*` (Linear, BatchNorm, Linear, BatchNorm). The seven heads become one
`ProjectorMixture` whose heads compute exactly what the original heads compute.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bonds.checkpoint import save_bond_checkpoint
from bonds.errors import CheckpointError
from bonds.projector import FREEBIND_MODES, ProjectorConfig, ProjectorMixture

# What each released bond connects (method.md): kind, source space, target space.
RELEASED_BONDS = {
    "IB_PP_G_Proj": ("combination", "clap_g", "imagebind"),
    "IB_PP_M_Proj": ("combination", "clap_m", "imagebind"),
    "InternVL_IB_Proj": ("displacement", "imagebind", "internvl_c"),
    "InternVL_IB_PP_G_Proj": ("combination", "clap_g", "internvl_ib"),
    "InternVL_IB_PP_M_Proj": ("combination", "clap_m", "internvl_ib"),
}
MODALITIES = {"clap_g": ["text", "audio"], "clap_m": ["text", "audio"], "imagebind": ["text", "image", "audio"],
              "internvl_c": ["text", "image"], "internvl_ib": ["text", "image", "audio"]}
PREFIX = "Head2.mlps."


def _read_head(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read as a plain state dict ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    heads = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not heads:
        raise CheckpointError(f"{path}: no '{PREFIX}*' keys; found {sorted(state)[:5]}")
    return heads


def convert_bond(folder: Path) -> ProjectorMixture:
    """One `<BOND>_Proj` folder -> a mixture with one head per mode found (released order)."""
    modes = [m for m in FREEBIND_MODES if (folder / m / "best.pt").is_file()]
    if not modes:
        raise CheckpointError(f"{folder}: no <mode>/best.pt files for modes {', '.join(FREEBIND_MODES)}")
    states = {m: _read_head(folder / m / "best.pt") for m in modes}
    first = states[modes[0]]
    d_in, hidden, d_out = first["0.weight"].shape[1], first["0.weight"].shape[0], first["3.weight"].shape[0]
    mixture = ProjectorMixture(ProjectorConfig(int(d_in), int(d_out), int(hidden), tuple(modes)))
    for mode, state in states.items():
        try:
            mixture.heads[mode].mlps.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{folder / mode / 'best.pt'}: does not fit a {d_in}->{hidden}->{d_out} head: {exc}") from None
    return mixture.eval()


def import_released(src: str | Path, dst: str | Path, dtype: str = "float32") -> dict[str, Path]:
    """Convert every `<BOND>_Proj` folder under `src` (or `src` itself) into `dst/<bond name>`."""
    src, dst = Path(src), Path(dst)
    folders = [src] if src.name.endswith("_Proj") else sorted(p for p in src.glob("*_Proj") if p.is_dir())
    if not folders:
        raise CheckpointError(f"{src}: no '*_Proj' bond folders found")
    written = {}
    for folder in folders:
        mixture = convert_bond(folder)
        kind, source, target = RELEASED_BONDS.get(folder.name, ("combination", "unknown", "unknown"))
        modalities = sorted(set(MODALITIES.get(source, [])) & set(MODALITIES.get(target, [])))
        out = dst / folder.name
        save_bond_checkpoint(
            out, mixture, kind=kind,
            source={"id": source, "dim": mixture.d_in}, target={"id": target, "dim": mixture.d_out},
            modalities=modalities, training={"origin": "released FreeBind checkpoint", "source_folder": folder.name},
            dtype=dtype,
        )
        written[folder.name] = out
    return written
