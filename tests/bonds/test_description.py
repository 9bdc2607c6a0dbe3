"""Space description files: built through the registries, with clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bonds.checkpoint import save_bond_checkpoint
from bonds.description import list_spaces, load_space
from bonds.errors import CheckpointError, DescriptionError, DimensionError, UnknownNameError
from tests.bonds.spaces import projector

TEXTS = ["a dog", "a car"]


def _write(tmp_path, bonds, presets=None, name="demo", suffix=".yaml"):
    description = {
        "format_version": 1,
        "name": name,
        "encoders": {
            "base": {"kind": "tiny", "options": {"dim": 16, "seed": 0}},
            "e5": {"kind": "tiny", "options": {"dim": 8, "seed": 1, "modalities": ["text"]}},
            "internvl": {"kind": "tiny", "options": {"dim": 10, "seed": 3, "modalities": ["text", "image"]}},
        },
        "base": "base",
        "bonds": bonds,
        "presets": presets or {},
    }
    path = tmp_path / f"{name}{suffix}"
    path.write_text(yaml.safe_dump(description) if suffix == ".yaml" else json.dumps(description))
    return path


def _checkpoint(folder, d_in, d_out, kind, seed=0):
    mixture = projector(d_in, d_out, seed=seed)
    save_bond_checkpoint(folder, mixture, kind=kind, source={"id": "s", "dim": d_in}, target={"id": "t", "dim": d_out},
                         modalities=["text"])
    return mixture


def test_sequential_description_builds_the_space(tmp_path):
    _checkpoint(tmp_path / "ckpt" / "disp", 16, 10, "displacement", seed=1)
    _checkpoint(tmp_path / "ckpt" / "e5", 8, 10, "combination", seed=2)
    path = _write(tmp_path, [
        {"name": "internvl", "kind": "displacement", "expert": "internvl", "checkpoint": "ckpt/disp",
         "factors": {"text": 0.2}},
        {"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "ckpt/e5"}}, "factors": {"text": 0.3}},
    ], presets={"multilingual": {"e5": {"text": 0.8}}})
    space = load_space(path)
    assert space.name == "demo" and space.dim == 10
    assert [b.bond_name for b in space.bonds()] == ["internvl", "e5"]
    assert space.resolve({"preset": "multilingual"}).factors == {"internvl": {"text": 0.2, "image": 0.0},
                                                                 "e5": {"text": 0.8}}
    vectors = space.embed("text", TEXTS, {"preset": "multilingual"})
    assert vectors.shape == (2, 10) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert load_space(path).fingerprint() == space.fingerprint()  # stable across loads


def test_json_descriptions_and_shared_encoder_cache(tmp_path):
    _checkpoint(tmp_path / "e5", 8, 16, "combination")
    path = _write(tmp_path, [{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5"}}}],
                  suffix=".json")
    cache: dict = {}
    a, b = load_space(path, encoder_cache=cache), load_space(path, encoder_cache=cache)
    assert len(cache) == 2  # only the encoders used (base, e5), each built once and shared
    assert a.encoder_spaces()["base"].encoder is b.encoder_spaces()["base"].encoder


def test_given_encoders_stand_in_for_the_described_ones(tmp_path):
    """`encoders=`: an encoder of that name is used as given and the described one never built (training scores
    a served space from vectors it already has); the others are built as described."""
    from bonds.encoders import create_encoder

    _checkpoint(tmp_path / "e5", 8, 16, "combination")
    path = _write(tmp_path, [{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5"}}}])
    described = "kind: tiny\n    options:\n      dim: 8"
    path.write_text(path.read_text().replace(described, described.replace("tiny", "nowhere")))
    with pytest.raises(UnknownNameError, match="nowhere"):
        load_space(path)
    given = create_encoder("tiny", dim=8, seed=1, modalities=["text"])
    space = load_space(path, encoders={"e5": given})
    assert space.encoder_spaces()["e5"].encoder is given
    assert space.encoder_spaces()["base"].encoder.dim == 16
    reference = load_space(_write(tmp_path, [{"name": "e5", "kind": "combination",
                                              "experts": {"e5": {"checkpoint": "e5"}}}], name="plain"))
    np.testing.assert_allclose(space.embed("text", TEXTS, {"factors": {"e5": {"text": 0.5}}}),
                               reference.embed("text", TEXTS, {"factors": {"e5": {"text": 0.5}}}), atol=1e-6)


@pytest.mark.parametrize(
    "bonds, error, message",
    [
        ([{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "nowhere"}}}], CheckpointError,
         "does not exist"),
        ([{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "wrongdim"}}}], DimensionError,
         "needs 16-d"),
        ([{"name": "x", "kind": "sideways"}], DescriptionError,
         "bonds.0.kind: Input should be 'displacement' or 'combination'"),
        ([{"name": "e5", "kind": "combination", "experts": {"clip": {"checkpoint": "x"}}}], DescriptionError,
         "unknown encoder 'clip'"),
        # checked against the schema before anything loads: each of these loaded silently wrong before
        ([{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5"}}, "factors": {"text": 1.5}}],
         DescriptionError, "bonds.0.factors.text: Input should be less than or equal to 1"),
        ([{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5"}}, "factors": {"txt": 0.5}}],
         DescriptionError, "factors names 'txt'; bond 'e5' mixes text"),
        ([{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5", "weight": float("inf")}}}],
         DescriptionError, "weight: Input should be a finite number"),
        ([{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5", "weight": -1}}}],
         DescriptionError, "weight: Input should be greater than or equal to 0"),
        ([{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5", "wieght": 2}}}],
         DescriptionError, "wieght: Extra inputs are not permitted"),
        ([{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5"}}},
          {"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5"}}}], DescriptionError,
         "repeated: e5"),
        ([{"name": "e5/v2", "kind": "combination", "experts": {"e5": {"checkpoint": "e5"}}}], DescriptionError,
         "bonds.0.name"),
        ([{"name": "d", "kind": "displacement", "experts": {"e5": {"checkpoint": "e5"}}}], DescriptionError,
         "a displacement bond has `expert` and `checkpoint`"),
    ],
)
def test_bad_descriptions_fail_clearly(tmp_path, bonds, error, message):
    _checkpoint(tmp_path / "wrongdim", 8, 12, "combination")
    _checkpoint(tmp_path / "e5", 8, 16, "combination")
    with pytest.raises(error, match=message):
        load_space(_write(tmp_path, bonds))


@pytest.mark.parametrize("text, message", [
    ("encoders: {b: {kind: tiny}}\nbase: b\nbond: []\n", "bond: Extra inputs are not permitted"),
    ("encoders: {b: {kind: tiny}}\nbase: b\npresets: {x: {nosuchbond: {text: 0.5}}}\n", "this space has no bonds"),
    ("encoders: {b: {kind: tiny}, b: {kind: tiny, options: {dim: 8}}}\nbase: b\n", "key 'b' appears twice"),
    ("encoders: [b]\nbase: b\n", "encoders: Input should be a valid dictionary"),
    ("encoders: {b: {kind: tiny, options: {dimm: 8}}}\nbase: b\n", "encoder 'b' .*unexpected keyword argument 'dimm'"),
    ("format_version: true\nencoders: {b: {kind: tiny}}\nbase: b\n", "format_version"),
])
def test_malformed_descriptions_name_the_file_and_the_place(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DescriptionError, match=message) as raised:
        load_space(path)
    assert str(path) in str(raised.value)


def test_a_relative_models_root_means_the_current_folder(tmp_path, monkeypatch):
    _checkpoint(tmp_path / "models" / "bonds" / "e5", 8, 16, "combination")
    (tmp_path / "spaces").mkdir()
    path = _write(tmp_path / "spaces", [{"name": "e5", "kind": "combination",
                                         "experts": {"e5": {"checkpoint": "${models_root}/bonds/e5"}}}])
    monkeypatch.chdir(tmp_path)
    assert load_space(path, models_root="models").dim == 16  # not spaces/models/...


def test_unknown_encoder_kind_and_space_name(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"encoders": {"b": {"kind": "clipp"}}, "base": "b"}))
    with pytest.raises(UnknownNameError, match="valid: .*tiny"):
        load_space(path)
    with pytest.raises(UnknownNameError, match="shipped spaces"):
        load_space("no_such_space")


def test_models_root_substitution(tmp_path):
    _checkpoint(tmp_path / "models" / "bonds" / "e5", 8, 16, "combination")
    bonds = [{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "${models_root}/bonds/e5"}}}]
    path = _write(tmp_path, bonds)
    with pytest.raises(DescriptionError, match="models root"):
        load_space(path)
    assert load_space(path, models_root=tmp_path / "models").dim == 16


def test_bad_preset_fails_at_load(tmp_path):
    _checkpoint(tmp_path / "e5", 8, 16, "combination")
    path = _write(tmp_path, [{"name": "e5", "kind": "combination", "experts": {"e5": {"checkpoint": "e5"}}}],
                  presets={"bad": {"e5": {"image": 0.5}}})
    with pytest.raises(Exception, match="modality 'image'"):
        load_space(path)


def test_list_spaces_returns_description_paths(tmp_path):
    path = _write(tmp_path, [])
    assert list_spaces([tmp_path])["demo"] == str(path)
