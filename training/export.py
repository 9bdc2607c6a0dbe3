"""Stage 5, export: the fitted projector as a bond checkpoint folder (bonds.checkpoint format).

The manifest carries what is needed to reproduce and to trust the bond: the training config (fit
stage), the pair-building config and data summary (pairs stage), the space specs and the loss
history. Weights may be stored as float16 (half the size; the loader casts back to float32).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bonds.checkpoint import Manifest, save_bond_checkpoint
from training.embed import read_space_info
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
