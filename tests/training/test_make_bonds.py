"""`make bonds` end to end with tiny encoders standing in for starter and e5 (slow: a few minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bonds.checkpoint import load_bond_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_bonds_dry_run(tmp_path, shared_data):
    names = shared_data / "text/imagenet-classnames"
    tasks_1k = tmp_path / "imagenet1k.yaml"  # two languages, no photos: nothing for the real classifier to do
    tasks_1k.write_text(f"languages:\n  en: {names}/en_classnames.json#imagenet1k\n"
                        f"  it: {names}/it_classnames.json#imagenet1k\nphotos: []\n")
    env = {**os.environ, "WORK": str(tmp_path / "work"), "OUT": str(tmp_path / "ckpt"), "EVAL": str(tmp_path / "eval"),
           "TASKS_1K": str(tasks_1k),
           "BIN": str(Path(sys.executable).parent), "DATA": str(shared_data), "PROGRESS": "0",
           "STARTER_ENCODER": "tiny", "STARTER_OPTIONS": "--encoder-option dim=32",
           "E5_ENCODER": "tiny", "E5_OPTIONS": '--encoder-option dim=24 --encoder-option modalities=["text"]',
           "N_M30K": "400", "N_FOREIGN": "50", "WORDNET_STEP": "400", "N_SPEECH": "6", "FSDD_STEP": "50",
           "CIFAR_STEP": "30", "HIDDEN": "32", "HIDDEN_D": "48", "EPOCHS_C": "2"}
    subprocess.run(["bash", str(REPO / "scripts" / "make_bonds.sh")], env=env, check=True, cwd=REPO,
                   capture_output=True, timeout=1200)
    combination, manifest = load_bond_checkpoint(tmp_path / "ckpt" / "e5_into_starter", kind="combination", d_in=24,
                                                 d_out=32)
    assert manifest.weights_dtype == "float16" and len(combination.heads) == 7
    text_pools = {name: json.loads((tmp_path / "work" / name / "pairs" / "summary.json").read_text())["centres"]["T"]
                  ["pools"] for name in ("e5_into_starter", "starter_into_e5")}
    # the foreign captions, embedded in e5 only and paired through the bank, train the combination alone
    assert {text_pools["e5_into_starter"][f"m30k_{lang}"] for lang in ("de", "fr", "cs")} == {50}
    assert "m30k_de" not in text_pools["starter_into_e5"]
    # the displacement is one head solved by Procrustes: its first layer holds Q^T and -Q^T, Q an orthogonal map
    # of the starter's 32 dimensions onto e5's 24 (orthonormal columns)
    displacement, _ = load_bond_checkpoint(tmp_path / "ckpt" / "starter_into_e5", kind="displacement", d_in=32,
                                           d_out=24)
    assert list(displacement.heads) == ["T"]
    first = displacement.heads["T"].mlps[0].weight.detach().float().numpy()
    np.testing.assert_array_equal(first[:24], -first[24:48])
    np.testing.assert_allclose(first[:24] @ first[:24].T, np.eye(24), atol=2e-3)
    report = json.loads((tmp_path / "eval" / "e5_into_starter.json").read_text())
    assert {"m30k_de_en", "cifar10_ar", "fsdd_de"} <= set(report["tasks"]) and "suggested_presets" in report
    report_1k = json.loads((tmp_path / "eval" / "starter_into_e5-1k.json").read_text())
    assert report_1k["languages"] == ["en", "it"] and set(report_1k["parts"]["names"]) >= {"reference", "bonded"}
    # each bond is scored as its shipped space serves it, with the checkpoints just trained: the displacement
    # behind the combination, swept on its own factor
    served = json.loads((tmp_path / "eval" / "starter_into_e5.json").read_text())["space"]
    assert (served["bonds"], served["swept"]) == (report_1k["space"]["bonds"], "e5") == (["e5_in_starter", "e5"], "e5")
    assert (tmp_path / "eval" / "e5_into_starter-1k.png").is_file()
    timings = (tmp_path / "work" / "timings.txt").read_text()
    assert "fit-e5_into_starter" in timings and "eval-1k-starter_into_e5" in timings and "total" in timings
