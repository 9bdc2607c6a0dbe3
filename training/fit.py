"""Stage 3, fit: train one projector head per data mode with symmetric InfoNCE.

Recipe (FreeBind): loss = (CE(P(s) . t^T / T) + CE(t . P(s)^T / T)) / 2 over a batch, T = 1/50, targets
L2-normalised; Adam lr 1e-3, batch 4096; 5 epochs for a displacement bond, 20 for a combination.
Each head sees only its mode's pairs (mode `AT` = audio- and text-centred pairs, `mix` = all).

Determinism on CPU: the weights are initialised after `torch.manual_seed(seed)`, every shuffle draws
from one seeded `torch.Generator`, deterministic algorithms are on while fitting. After each epoch
the full state (weights, BatchNorm statistics, Adam moments, the generator) is written without
pickles (training.state); a resumed run continues from the newest epoch and ends bit-identical to
an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bonds.projector import ProjectorConfig, ProjectorMixture
from training.pairs import load_pairs
from training.state import flatten_optimizer, latest_state, load_state, save_state, unflatten_optimizer

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = {"displacement": 5, "combination": 20}


@dataclass
class FitConfig:
    kind: str  # displacement | combination: sets the default epochs and is recorded in the checkpoint
    epochs: int | None = None
    lr: float = 1e-3
    batch_size: int = 4096
    temperature: float = 1 / 50
    hidden: int = 2048
    seed: int = 0
    modes: list[str] = field(default_factory=list)  # empty: every mode the pairs have

    def resolved_epochs(self) -> int:
        if self.epochs is not None:
            return int(self.epochs)
        if self.kind not in DEFAULT_EPOCHS:
            raise ValueError(f"unknown bond kind {self.kind!r}; valid: {', '.join(DEFAULT_EPOCHS)}")
        return DEFAULT_EPOCHS[self.kind]

    def to_dict(self) -> dict:
        return {**asdict(self), "epochs": self.resolved_epochs()}


def info_nce(projected_nd: torch.Tensor, target_nd: torch.Tensor, temperature: float = 1 / 50) -> torch.Tensor:
    """Symmetric InfoNCE; row i of both is a positive pair, every other row of the batch a negative."""
    a = torch.nn.functional.normalize(projected_nd, dim=-1)
    b = torch.nn.functional.normalize(target_nd, dim=-1)
    logits_nn = a @ b.T / temperature
    labels = torch.arange(len(a), device=a.device)
    return (torch.nn.functional.cross_entropy(logits_nn, labels) + torch.nn.functional.cross_entropy(logits_nn.T, labels)) / 2


@contextmanager
def deterministic():
    """Deterministic kernels while fitting, restored afterwards (other code in the process may differ)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _mode_indices(summary: dict, centres: dict, wanted: list[str]) -> dict[str, torch.Tensor]:
    """Mode -> row indices into the concatenation of the centres (in `summary["centres"]` order)."""
    offsets, at = {}, 0
    for letter in summary["centres"]:
        offsets[letter] = (at, at + len(centres[letter][0]))
        at += len(centres[letter][0])
    modes = summary["modes"] if not wanted else {m: summary["modes"][m] for m in wanted if m in summary["modes"]}
    missing = [m for m in wanted if m not in summary["modes"]]
    if missing:
        raise ValueError(f"modes {missing} have no pairs; the pairs stage made {', '.join(summary['modes'])}")
    return {m: torch.cat([torch.arange(*offsets[c]) for c in letters]) for m, letters in modes.items()}


def fit(workdir: Path, config: FitConfig, *, progress: bool = True, stop_after: int | None = None,
        device: str = "cpu") -> ProjectorMixture:
    """Train (or resume) and write `fit/projector.safetensors` + `fit/fit.json`; returns the projector.

    `stop_after` ends this run after that many epochs (an interruption on purpose: the next call resumes).
    """
    workdir = Path(workdir)
    summary, centres = load_pairs(workdir)
    source = torch.from_numpy(np.concatenate([centres[c][0] for c in summary["centres"]]))
    target = torch.nn.functional.normalize(torch.from_numpy(np.concatenate([centres[c][1] for c in summary["centres"]])), dim=-1)
    modes = _mode_indices(summary, centres, config.modes)
    epochs = config.resolved_epochs()
    root = workdir / "fit"
    stamp = {"config": config.to_dict(), "pairs": summary["centres"]}

    with deterministic():
        torch.manual_seed(config.seed)
        model = ProjectorMixture(ProjectorConfig(source.shape[1], target.shape[1], config.hidden, tuple(modes))).to(device)
        optimizers = {m: torch.optim.Adam(model.heads[m].parameters(), lr=config.lr) for m in modes}
        generator = torch.Generator().manual_seed(config.seed)
        history: list[dict] = []
        start = _resume(root / "state", stamp, model, optimizers, generator, history)
        run_epochs = range(start, epochs if stop_after is None else min(epochs, start + stop_after))
        steps = sum(-(-len(idx) // config.batch_size) for idx in modes.values()) * len(run_epochs)
        bar = tqdm(total=steps, disable=not progress, desc="fit", unit="step")
        seen, started = 0, time.perf_counter()
        for epoch in run_epochs:
            model.train()
            losses = {}
            for mode, idx in modes.items():
                total, batches = 0.0, 0
                for batch in idx[torch.randperm(len(idx), generator=generator)].split(config.batch_size):
                    bar.update(1)
                    if len(batch) < 2:  # BatchNorm needs two rows; only a 1-row tail is dropped
                        continue
                    loss = info_nce(model.heads[mode](source[batch].to(device)), target[batch].to(device), config.temperature)
                    optimizers[mode].zero_grad(set_to_none=True)
                    loss.backward()
                    optimizers[mode].step()
                    total, batches, seen = total + loss.item(), batches + 1, seen + len(batch)
                losses[mode] = total / max(batches, 1)
            history.append({"epoch": epoch + 1, "loss": losses})
            log.info("epoch %d/%d: %s", epoch + 1, epochs, ", ".join(f"{m} {v:.4f}" for m, v in losses.items()))
            _save(root / "state" / f"epoch-{epoch + 1:04d}", stamp, epoch + 1, model, optimizers, generator, history)
        bar.close()
        seconds = time.perf_counter() - started
    model.eval()
    finished = len(history) >= epochs
    report = {**stamp, "epochs_done": len(history), "finished": finished, "history": history,
              "samples_per_second_this_run": round(seen / max(seconds, 1e-9), 1), "modes": {m: len(i) for m, i in modes.items()},
              "source_dim": int(source.shape[1]), "target_dim": int(target.shape[1])}
    if finished:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(root / "projector.safetensors"))
        (root / "projector.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    (root / "fit.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("fit: %d pair-steps in %.1f s (%.0f samples/s)", seen, seconds, report["samples_per_second_this_run"])
    return model


def _save(folder, stamp, epoch, model, optimizers, generator, history) -> None:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    groups = {}
    for mode, optimizer in optimizers.items():
        flat, scalars = flatten_optimizer(f"optim/{mode}", optimizer)
        tensors.update(flat)
        groups[mode] = scalars
    tensors["rng/generator"] = generator.get_state()
    save_state(folder, tensors, {"stamp": stamp, "epoch": epoch, "optimizers": groups, "history": history})


def _resume(root: Path, stamp, model, optimizers, generator, history: list) -> int:
    """Load the newest state if it belongs to this config and these pairs; returns the epoch to start at."""
    folder = latest_state(root)
    if folder is None:
        return 0
    tensors, scalars = load_state(folder)
    if scalars["stamp"] != json.loads(json.dumps(stamp)):
        raise ValueError(f"{folder} was written for another config or other pairs; remove {root} to start over")
    model.load_state_dict({k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")})
    for mode, optimizer in optimizers.items():
        optimizer.load_state_dict(unflatten_optimizer(f"optim/{mode}", tensors, scalars["optimizers"][mode]))
    generator.set_state(tensors["rng/generator"])
    history.extend(scalars["history"])
    log.info("resuming after epoch %d from %s", scalars["epoch"], folder)
    return int(scalars["epoch"])


def load_fitted(workdir: Path) -> tuple[ProjectorMixture, dict]:
    """The finished projector of a work folder (eval mode) and its fit report."""
    from safetensors.torch import load_file

    root = Path(workdir) / "fit"
    if not (root / "projector.safetensors").is_file():
        raise FileNotFoundError(f"no finished projector in {root}; run `fit` to the last epoch first")
    config = ProjectorConfig.from_dict(json.loads((root / "projector.json").read_text()))
    model = ProjectorMixture(config)
    model.load_state_dict(load_file(str(root / "projector.safetensors")))
    return model.eval(), json.loads((root / "fit.json").read_text())
