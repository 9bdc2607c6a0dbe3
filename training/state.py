"""Resumable training state without pickles: tensors in safetensors, everything else in JSON.

`torch.save` of an optimizer state dict is a pickle (loading one can run code), so the state is split:
every tensor (weights, BatchNorm statistics, Adam moments and step counts, the shuffling generator's
state) goes to `state.safetensors` under a flat name, and the scalars (epoch, hyperparameters, param
group settings, loss history) go to `state.json`. A state folder is written under a temp name and
renamed, so a crash leaves the previous epoch's state intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

TENSORS = "state.safetensors"
SCALARS = "state.json"


def flatten_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict as flat tensors `prefix/state/<param>/<name>` plus JSON param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for param_id, per_param in state["state"].items():
        for name, value in per_param.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"{prefix}/state/{param_id}/{name}"] = value.detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], scalars: dict) -> dict[str, Any]:
    """The inverse of `flatten_optimizer`: a state dict `optimizer.load_state_dict` takes."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    head = f"{prefix}/state/"
    for key, value in tensors.items():
        if key.startswith(head):
            param_id, name = key[len(head) :].split("/", 1)
            state.setdefault(int(param_id), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in scalars["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_state(folder: Path, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / TENSORS))
    (staging / SCALARS).write_text(json.dumps(scalars, indent=2, sort_keys=True) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)


def load_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    folder = Path(folder)
    return load_file(str(folder / TENSORS)), json.loads((folder / SCALARS).read_text())


def latest_state(root: Path) -> Path | None:
    """The newest complete `epoch-NNNN` folder under root (both files present), or None."""
    found = sorted(p for p in Path(root).glob("epoch-*") if (p / TENSORS).is_file() and (p / SCALARS).is_file())
    return found[-1] if found else None
