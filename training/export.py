"""Stage 5, export: the fitted projector as a bond checkpoint folder (bonds.checkpoint format), and
`load_bond`, the way back: the work folder's bond from its fit or from such a folder (what eval scores).

The manifest carries what is needed to reproduce and to trust the bond: the training config (fit
stage), the pair-building config and data summary (pairs stage), the space specs and the loss
history. Weights may be stored as float16 (half the size; the loader casts back to float32).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bonds.checkpoint import Manifest, load_bond_checkpoint, read_manifest, save_bond_checkpoint
from bonds.projector import ProjectorMixture
from training.embed import SpaceSpec, read_space_info
from training.fit import load_fitted

log = logging.getLogger(__name__)


def export(workdir: Path, folder: Path, *, dtype: str = "float32", source_id: str | None = None,
           target_id: str | None = None) -> Manifest:
    """Write `folder` from the work folder's finished fit; `*_id` rename the spaces in the manifest."""
    workdir = Path(workdir)
    projector, report = load_fitted(workdir)
    pairs = json.loads((workdir / "pairs" / "summary.json").read_text())
    config = pairs["config"]
    source, target = read_space_info(workdir, config["source"]), read_space_info(workdir, config["target"])
    modalities = sorted(set(source["modalities"]) | set(target["modalities"]))
    training = {**report["config"], "history": report["history"], "modes": report["modes"]}
    data = {"pairs": pairs["config"], "centres": pairs["centres"], "modes": pairs["modes"],
            "spaces": {"source": source["spec"], "target": target["spec"]}}
    manifest = save_bond_checkpoint(
        folder, projector, kind=report["config"]["kind"],
        source={"id": source_id or config["source"], "dim": projector.d_in},
        target={"id": target_id or config["target"], "dim": projector.d_out},
        modalities=modalities, training=training, data=data, dtype=dtype,
    )
    log.info("exported %s bond %s -> %s to %s (%s)", manifest.kind, manifest.source["id"], manifest.target["id"],
             folder, dtype)
    return manifest


def load_bond(workdir: Path, checkpoint: Path | None = None) -> tuple[str, str, str, ProjectorMixture]:
    """(source, target, kind, projector) of the work folder's bond: its fit, or `checkpoint`, an exported
    folder of a bond between the same spaces (what `eval` and `eval-1k` score). A work folder without
    pairs takes the checkpoint alone, between the spaces its manifest says it was trained between."""
    workdir = Path(workdir)
    summary_path = workdir / "pairs" / "summary.json"
    if not summary_path.is_file() and checkpoint is not None:
        manifest = read_manifest(checkpoint)
        source, target = trained_ends(manifest)
        projector, manifest = load_bond_checkpoint(checkpoint, kind=manifest.kind, d_in=manifest.source["dim"],
                                                   d_out=manifest.target["dim"])
        return source, target, manifest.kind, projector
    if not summary_path.is_file():
        raise FileNotFoundError(f"no pairs in {summary_path.parent} (eval reads the bond's spaces from them); "
                                "run `pairs` first, pass the right --workdir or a --checkpoint")
    pairs = json.loads(summary_path.read_text())["config"]
    if checkpoint is None:
        projector, report = load_fitted(workdir)
        return pairs["source"], pairs["target"], report["config"]["kind"], projector
    manifest = read_manifest(checkpoint)
    ends = trained_ends(manifest)
    fit_report = workdir / "fit" / "fit.json"
    kind = json.loads(fit_report.read_text())["config"]["kind"] if fit_report.is_file() else manifest.kind
    if ends != (pairs["source"], pairs["target"]) or manifest.kind != kind:
        raise ValueError(f"{checkpoint} holds a {manifest.kind} bond {ends[0]} -> {ends[1]}, but the bond of "
                         f"{workdir} is a {kind} bond {pairs['source']} -> {pairs['target']}; pass that bond's "
                         "checkpoint, or the work folder it was trained in")
    dims = [read_space_info(workdir, space)["dim"] for space in (pairs["source"], pairs["target"])]
    projector, manifest = load_bond_checkpoint(checkpoint, kind=kind, d_in=dims[0], d_out=dims[1])
    return pairs["source"], pairs["target"], manifest.kind, projector


def trained_ends(manifest: Manifest) -> tuple[str, str]:
    """The spaces a bond was trained between (export records the pairs config; `--source-id` may rename
    the ids the manifest shows)."""
    trained = manifest.data.get("pairs") or {}
    return trained.get("source", manifest.source.get("id")), trained.get("target", manifest.target.get("id"))


def trained_spaces(checkpoint: Path) -> dict[str, SpaceSpec]:
    """{space name: how to build it} for the two spaces a checkpoint was trained between, from its manifest
    (what a fresh work folder embeds in)."""
    specs = (read_manifest(checkpoint).data.get("spaces") or {}).values()
    return {spec["name"]: SpaceSpec(**spec) for spec in specs}
