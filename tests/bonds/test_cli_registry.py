"""The `freebind` command line and the registries' errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from bonds.checkpoint import load_bond_checkpoint
from bonds.cli import app
from bonds.encoders import create_encoder, list_encoders
from bonds.errors import UnknownNameError
from bonds.registry import Registry
from tests.bonds.test_checkpoint import _write_released


def test_import_checkpoint_command_converts_a_whole_tree(tmp_path):
    _write_released(tmp_path / "checkpoints", "IB_PP_M_Proj", 16, 32, 24)
    result = CliRunner().invoke(app, ["import-checkpoint", str(tmp_path / "checkpoints"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "IB_PP_M_Proj ->" in result.output
    mixture, manifest = load_bond_checkpoint(tmp_path / "out" / "IB_PP_M_Proj")
    assert manifest.source == {"id": "clap_m", "dim": 16} and len(mixture.heads) == 7


def test_import_checkpoint_command_reports_a_bad_folder(tmp_path):
    result = CliRunner().invoke(app, ["import-checkpoint", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "no '*_Proj' bond folders" in str(result.exception)


def test_unknown_names_list_the_valid_ones_and_suggest():
    registry: Registry = Registry("colour")
    registry.register("red")(1)
    registry.register("green")(2)
    with pytest.raises(UnknownNameError, match=r"unknown colour 'gren'; valid: green, red. Did you mean 'green'\?"):
        registry.get("gren")
    with pytest.raises(ValueError, match="twice"):
        registry.register("red")(3)


def test_encoder_registry_builds_the_tiny_encoder_deterministically():
    assert "tiny" in list_encoders()
    a, b = create_encoder("tiny", dim=8, seed=3), create_encoder("tiny", dim=8, seed=3)
    texts = ["one", "two words"]
    assert np.array_equal(a.encode("text", texts).vectors, b.encode("text", texts).vectors)
    with pytest.raises(UnknownNameError, match="unknown encoder 'tinny'"):
        create_encoder("tinny")
