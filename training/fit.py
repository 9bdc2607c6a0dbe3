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
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bonds.checkpoint import sha256_file
from bonds.projector import ProjectorConfig, ProjectorMixture
from training.pairs import load_pairs
from training.state import flatten_optimizer, latest_state, load_state, save_state, unflatten_optimizer

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = {"displacement": 5, "combination": 20}
METHODS = ("infonce", "procrustes")


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
    # Gaussian noise (this std per coordinate) added to each source vector, then re-normalised, fresh every
    # step: a smoother map, so inputs unlike the training text (e5's vectors of other languages, which sit
    # off the English ones it learnt) land nearer to where their English neighbours go. 0: off.
    input_noise: float = 0.0
    # infonce: FreeBind's heads, trained; procrustes: each head the orthogonal map of its mode's pairs, solved in
    # closed form (training.procrustes; epochs, lr, temperature and noise do not apply)
    method: str = "infonce"

    def resolved_epochs(self) -> int:
        if self.epochs is not None:
            return int(self.epochs)
        if self.kind not in DEFAULT_EPOCHS:
            raise ValueError(f"unknown bond kind {self.kind!r}; valid: {', '.join(DEFAULT_EPOCHS)}")
        return DEFAULT_EPOCHS[self.kind]

    def to_dict(self) -> dict:
        data = {**asdict(self), "epochs": self.resolved_epochs()}
        if self.method == "infonce":  # as before the option: earlier fits' stamps (and resumes) stay valid
            del data["method"]
        return data

    def validate(self) -> None:
        """A ValueError naming the first setting out of range (the CLI prints it as `error: ...`)."""
        if self.method not in METHODS:
            raise ValueError(f"unknown fit method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.resolved_epochs() < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch size must be >= 2 (InfoNCE needs negatives, BatchNorm two rows), got {self.batch_size}")
        for name, value in (("learning rate", self.lr), ("temperature", self.temperature)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.hidden < 1:
            raise ValueError(f"hidden width must be >= 1, got {self.hidden}")
        if not (math.isfinite(self.input_noise) and 0 <= self.input_noise <= 1):
            raise ValueError(f"input noise must be a number in [0, 1] (a std per coordinate of unit vectors), got "
                             f"{self.input_noise}")


def info_nce(projected_nd: torch.Tensor, target_nd: torch.Tensor, temperature: float = 1 / 50) -> torch.Tensor:
    """Symmetric InfoNCE; row i of both is a positive pair, every other row of the batch a negative."""
    a = torch.nn.functional.normalize(projected_nd, dim=-1)
    b = torch.nn.functional.normalize(target_nd, dim=-1)
    logits_nn = a @ b.T / temperature
    labels = torch.arange(len(a), device=a.device)
    cross_entropy = torch.nn.functional.cross_entropy
    return (cross_entropy(logits_nn, labels) + cross_entropy(logits_nn.T, labels)) / 2


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
    config.validate()
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop after must be >= 1 epoch, got {stop_after}")
    check_device(device)
    summary, source, target, modes = _training_pairs(workdir, config)
    epochs = config.resolved_epochs()
    root = workdir / "fit"
    stamp = {"config": config.to_dict(), "pairs": summary["centres"]}
    if config.method == "procrustes":
        return _fit_procrustes(root, stamp, config, source, target, modes)

    with deterministic():
        torch.manual_seed(config.seed)
        model = ProjectorMixture(
            ProjectorConfig(source.shape[1], target.shape[1], config.hidden, tuple(modes))).to(device)
        optimizers = {m: torch.optim.Adam(model.heads[m].parameters(), lr=config.lr) for m in modes}
        generator = torch.Generator().manual_seed(config.seed)
        history: list[dict] = []
        start = _resume(root / "state", stamp, model, optimizers, generator, history)
        _drop_stale_outputs(root, stamp)
        run_epochs = range(start, epochs if stop_after is None else min(epochs, start + stop_after))
        steps = sum(-(-len(idx) // config.batch_size) for idx in modes.values()) * len(run_epochs)
        bar = tqdm(total=steps, disable=not progress, desc="fit", unit="step")
        seen, started = 0, time.perf_counter()
        for epoch in run_epochs:
            losses, epoch_seen = _train_epoch(model, optimizers, generator, modes, (source, target), config,
                                              device, bar, epoch, root)
            seen += epoch_seen
            history.append({"epoch": epoch + 1, "loss": losses})
            log.info("epoch %d/%d: %s", epoch + 1, epochs, ", ".join(f"{m} {v:.4f}" for m, v in losses.items()))
            _save(root / "state" / f"epoch-{epoch + 1:04d}", stamp, epoch + 1, model, optimizers, generator, history)
        bar.close()
        seconds = time.perf_counter() - started
    model.eval()
    finished = len(history) >= epochs
    report = {**stamp, "epochs_done": len(history), "finished": finished, "history": history,
              "samples_per_second_this_run": round(seen / max(seconds, 1e-9), 1),
              "modes": {m: len(i) for m, i in modes.items()},
              "source_dim": int(source.shape[1]), "target_dim": int(target.shape[1])}
    _write_outputs(root, model, report)
    log.info("fit: %d pair-steps in %.1f s (%.0f samples/s)", seen, seconds, report["samples_per_second_this_run"])
    return model


def _fit_procrustes(root: Path, stamp: dict, config: FitConfig, source: torch.Tensor, target: torch.Tensor,
                    modes: dict[str, torch.Tensor]) -> ProjectorMixture:
    """Each mode's head the orthogonal map of its pairs (training.procrustes), written as a trained fit is."""
    from training.procrustes import linear_head, orthogonal_map

    started = time.perf_counter()
    model = ProjectorMixture(ProjectorConfig(source.shape[1], target.shape[1], config.hidden, tuple(modes)))
    for mode, idx in modes.items():
        model.heads[mode] = linear_head(orthogonal_map(source[idx].numpy(), target[idx].numpy()), config.hidden)
    model.eval()
    root.mkdir(parents=True, exist_ok=True)
    _drop_stale_outputs(root, stamp)
    seconds = time.perf_counter() - started
    report = {**stamp, "epochs_done": 0, "finished": True, "history": [], "seconds": round(seconds, 3),
              "modes": {m: len(i) for m, i in modes.items()},
              "source_dim": int(source.shape[1]), "target_dim": int(target.shape[1])}
    _write_outputs(root, model, report)
    log.info("fit: %s solved by Procrustes in %.2f s", ", ".join(modes), seconds)
    return model


def _training_pairs(workdir: Path, config: FitConfig) -> tuple[dict, torch.Tensor, torch.Tensor, dict]:
    """The pairs stage's summary, every source and (unit) target row, and each mode's row indices, checked:
    finite values, at least two pairs a mode."""
    summary, centres = load_pairs(workdir)
    for letter, arrays in centres.items():
        if not all(np.isfinite(a).all() for a in arrays):
            raise ValueError(
                f"pairs of centre {letter} hold NaN or inf values; check the embeddings and run `pairs` again")
    source = torch.from_numpy(np.concatenate([centres[c][0] for c in summary["centres"]]))
    target = torch.nn.functional.normalize(
        torch.from_numpy(np.concatenate([centres[c][1] for c in summary["centres"]])), dim=-1)
    modes = _mode_indices(summary, centres, config.modes)
    few = {m: len(idx) for m, idx in modes.items() if len(idx) < 2}
    if few:
        raise ValueError(
            f"modes {few} have fewer than 2 pairs (InfoNCE needs a batch of two); add data or leave them out")
    return summary, source, target, modes


def _train_epoch(model, optimizers, generator, modes, pairs, config: FitConfig, device, bar, epoch: int,
                 root: Path) -> tuple[dict[str, float], int]:
    """One epoch over every head, each on its own shuffle of its mode's pairs; returns each head's mean loss
    and the pairs seen. A loss that is not finite ends training with a message instead of saving NaNs."""
    source, target = pairs
    model.train()
    losses, seen = {}, 0
    for mode, idx in modes.items():
        total, batches = 0.0, 0
        for batch in idx[torch.randperm(len(idx), generator=generator)].split(config.batch_size):
            bar.update(1)
            if len(batch) < 2:  # BatchNorm needs two rows; only a 1-row tail is dropped
                continue
            x = source[batch]
            if config.input_noise:  # drawn from the seeded generator: a resumed run stays bit-identical
                x = torch.nn.functional.normalize(x + config.input_noise * torch.randn(x.shape, generator=generator),
                                                  dim=-1)
            loss = info_nce(model.heads[mode](x.to(device)), target[batch].to(device), config.temperature)
            value = loss.item()
            if not math.isfinite(value):
                bar.close()
                raise ValueError(f"the loss of head {mode} became {value} in epoch {epoch + 1}: training "
                                 f"diverged; lower --lr (now {config.lr}) or raise --temperature (now "
                                 f"{config.temperature}), remove {root / 'state'} and fit again")
            optimizers[mode].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[mode].step()
            total, batches, seen = total + value, batches + 1, seen + len(batch)
        losses[mode] = total / max(batches, 1)
    return losses, seen


def _write_outputs(root: Path, model: ProjectorMixture, report: dict) -> None:
    """fit.json always; the projector (and its sha256 in the report) only once every epoch is done."""
    if report["finished"]:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(root / "projector.safetensors"))
        (root / "projector.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        report["projector_sha256"] = sha256_file(root / "projector.safetensors")  # ties the weights to this report
    (root / "fit.json").write_text(json.dumps(report, indent=2) + "\n")


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


def check_device(device: str) -> None:
    """A ValueError for a device string torch does not know or a device this machine does not have."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu or cuda (cuda:N)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    index = torch.device(device).index
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available on this machine; use --device cpu")


def _drop_stale_outputs(root: Path, stamp: dict) -> None:
    """A run of another config or on other pairs starts (its state was removed): the projector and report
    of the previous run are no longer this fit's, so they go before anything else is written."""
    report_path = root / "fit.json"
    if not report_path.is_file():
        return
    report = json.loads(report_path.read_text())
    if {"config": report.get("config"), "pairs": report.get("pairs")} == json.loads(json.dumps(stamp)):
        return
    for name in ("projector.safetensors", "projector.json", "fit.json"):
        (root / name).unlink(missing_ok=True)
    log.info("removed the projector of the previous fit in %s (another config or other pairs)", root)


def load_fitted(workdir: Path) -> tuple[ProjectorMixture, dict]:
    """The finished projector of a work folder (eval mode) and its fit report.

    Refused unless the last fit run finished, the projector on disk is the one that run wrote, and the
    pairs it was trained on are the work folder's current pairs.
    """
    from safetensors.torch import load_file

    workdir = Path(workdir)
    root = workdir / "fit"
    weights, report_path = root / "projector.safetensors", root / "fit.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"no fit in {root}; run `fit` first")
    report = json.loads(report_path.read_text())
    if not report.get("finished"):
        raise ValueError(f"the fit in {root} is not finished ({report.get('epochs_done')} of "
                         f"{report.get('config', {}).get('epochs')} epochs); run `fit` again with the same options "
                         "to finish it")
    if not weights.is_file() or not (root / "projector.json").is_file():
        raise FileNotFoundError(f"no finished projector in {root}; run `fit` again with the same options to write it")
    if report.get("projector_sha256") != sha256_file(weights):
        raise ValueError(f"{weights} is not the projector of the fit {report_path} describes; run `fit` again with "
                         "the same options to rewrite it")
    summary_path = workdir / "pairs" / "summary.json"
    if summary_path.is_file() and json.loads(summary_path.read_text())["centres"] != report.get("pairs"):
        raise ValueError(f"the pairs in {summary_path.parent} changed after the fit in {root}; remove {root} and "
                         "run `fit` again")
    config = ProjectorConfig.from_dict(json.loads((root / "projector.json").read_text()))
    model = ProjectorMixture(config)
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), report
