"""Checkpoint folders: round trip, hash and dimension checks, and the released-layout importer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bonds.checkpoint import load_bond_checkpoint, read_manifest, save_bond_checkpoint
from bonds.errors import CheckpointError, DimensionError
from bonds.importer import convert_bond, import_released
from bonds.projector import FREEBIND_MODES
from tests.bonds.spaces import projector


def _save(folder, mixture, dtype="float32", **kw):
    return save_bond_checkpoint(
        folder, mixture, kind="combination", source={"id": "e5", "dim": mixture.d_in},
        target={"id": "starter", "dim": mixture.d_out}, modalities=["text"],
        training={"epochs": 20, "lr": 1e-3}, data={"pairs": 123}, dtype=dtype, **kw,
    )


def test_round_trip_is_exact_in_float32(tmp_path):
    mixture = projector(12, 6)
    manifest = _save(tmp_path / "bond", mixture)
    loaded, read = load_bond_checkpoint(tmp_path / "bond", kind="combination", d_in=12, d_out=6)
    x = np.random.default_rng(1).standard_normal((4, 12)).astype(np.float32)
    assert np.array_equal(loaded.project(x), mixture.project(x))
    assert read.weights_sha256 == manifest.weights_sha256 and read.training["epochs"] == 20
    assert list(loaded.heads) == ["mix", "A", "T"]
    files = sorted(p.name for p in (tmp_path / "bond").iterdir())
    assert files == ["manifest.json", "weights.safetensors"]  # no pickles, no leftovers


def test_a_checkpoint_replaces_only_a_checkpoint_or_an_empty_folder(tmp_path):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "important.txt").write_text("data")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        _save(precious, projector(12, 6))
    assert (precious / "important.txt").read_text() == "data" and (precious / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # no staging folder left behind
    (tmp_path / "empty").mkdir()
    _save(tmp_path / "empty", projector(12, 6))
    _save(tmp_path / "empty", projector(12, 6, seed=1))  # an earlier checkpoint is replaced
    assert read_manifest(tmp_path / "empty").kind == "combination"


def test_a_checkpoint_is_readable_by_other_users_as_the_umask_allows(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        _save(tmp_path / "bond", projector(12, 6))
    finally:
        os.umask(old)
    assert (tmp_path / "bond").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "bond").iterdir()} == {0o644}


def test_the_current_folder_can_be_the_destination(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    monkeypatch.chdir(target)
    _save(".", projector(12, 6))
    assert read_manifest(target).kind == "combination"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_float16_storage_stays_close(tmp_path):
    mixture = projector(12, 6)
    _save(tmp_path / "bond", mixture, dtype="float16")
    loaded, manifest = load_bond_checkpoint(tmp_path / "bond")
    x = np.random.default_rng(2).standard_normal((8, 12)).astype(np.float32)
    assert manifest.weights_dtype == "float16"
    assert np.abs(loaded.project(x) - mixture.project(x)).max() < 5e-3


def test_tampered_weights_fail_the_hash_check(tmp_path):
    _save(tmp_path / "bond", projector(12, 6))
    weights = tmp_path / "bond" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_bond_checkpoint(tmp_path / "bond")


def test_dimension_kind_and_version_checks(tmp_path):
    _save(tmp_path / "bond", projector(12, 6))
    with pytest.raises(DimensionError, match="input is 12-d, but the space here needs 10-d"):
        load_bond_checkpoint(tmp_path / "bond", d_in=10)
    with pytest.raises(CheckpointError, match="displacement bond is needed"):
        load_bond_checkpoint(tmp_path / "bond", kind="displacement")
    manifest_path = tmp_path / "bond" / "manifest.json"
    raw = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**raw, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_manifest(tmp_path / "bond")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_bond_checkpoint(tmp_path / "missing")


def test_save_refuses_mismatched_dims(tmp_path):
    with pytest.raises(DimensionError):
        save_bond_checkpoint(tmp_path / "b", projector(12, 6), kind="combination", source={"id": "a", "dim": 11},
                             target={"id": "b", "dim": 6}, modalities=["text"])


def _write_released(root, bond, d_in, d_out, hidden, modes=FREEBIND_MODES):
    """Files of the exact released layout: <BOND>_Proj/<mode>/best.pt, plain state dicts `Head2.mlps.*`."""
    originals = {}
    for i, mode in enumerate(modes):
        torch.manual_seed(100 + i)
        head = torch.nn.Sequential(
            torch.nn.Linear(d_in, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, d_out), torch.nn.BatchNorm1d(d_out),
        )
        for bn in (head[1], head[4]):
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 2)
            bn.num_batches_tracked.fill_(1000)
        head.eval()
        (root / bond / mode).mkdir(parents=True)
        torch.save({f"Head2.mlps.{k}": v for k, v in head.state_dict().items()}, root / bond / mode / "best.pt")
        originals[mode] = head
    return originals


def test_importer_computes_exactly_what_the_released_heads_compute(tmp_path):
    originals = _write_released(tmp_path / "checkpoints", "IB_PP_G_Proj", 512 // 16, 1024 // 16, 48)
    _write_released(tmp_path / "checkpoints", "InternVL_IB_Proj", 1024 // 16, 768 // 16, 40)
    written = import_released(tmp_path / "checkpoints", tmp_path / "ours")
    assert set(written) == {"IB_PP_G_Proj", "InternVL_IB_Proj"}
    loaded, manifest = load_bond_checkpoint(written["IB_PP_G_Proj"], kind="combination", d_in=32, d_out=64)
    assert manifest.source["id"] == "clap_g" and manifest.target["id"] == "imagebind"
    assert read_manifest(written["InternVL_IB_Proj"]).kind == "displacement"
    # the modalities each bond mixes: those both of its spaces embed
    assert manifest.modalities == ["audio", "text"]
    assert read_manifest(written["InternVL_IB_Proj"]).modalities == ["image", "text"]
    x = torch.randn(6, 32)
    with torch.no_grad():
        reference = torch.stack([torch.nn.functional.normalize(h(x), dim=-1) for h in originals.values()]).mean(0)
    reference = torch.nn.functional.normalize(reference, dim=-1).numpy()
    assert np.allclose(loaded.project(x.numpy()), reference, atol=1e-6)
    assert list(loaded.heads) == list(FREEBIND_MODES)


def test_importer_errors_are_clear(tmp_path):
    (tmp_path / "X_Proj" / "mix").mkdir(parents=True)
    torch.save({"something.else": torch.zeros(2)}, tmp_path / "X_Proj" / "mix" / "best.pt")
    with pytest.raises(CheckpointError, match="Head2.mlps"):
        convert_bond(tmp_path / "X_Proj")
    with pytest.raises(CheckpointError, match="no '\\*_Proj'"):
        import_released(tmp_path / "X_Proj" / "mix", tmp_path / "out")
