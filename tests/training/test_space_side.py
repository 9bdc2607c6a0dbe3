"""Scoring a bond as the space that serves it (`--space`): one bond alone is the bond's own formula; a
displacement behind a combination is the two reference formulas in sequence; descriptions that cannot
stand in for the work folder are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bonds.checkpoint import save_bond_checkpoint
from bonds.projector import ProjectorConfig, ProjectorMixture
from bonds.reference import combine, displace, normalize
from training import eval1k
from training.embed import SpaceSpec, embed_pools, load_embeddings
from training.evaluate import Leaves
from training.pools import parse_pool
from training.space_side import SpaceSide, load_side

BASE = {"name": "s", "encoder": "tiny", "options": {"dim": 24}}
EXPERT = {"name": "e", "encoder": "tiny", "options": {"dim": 20, "seed": 1, "modalities": ["text"]}}


def _projector(d_in: int, d_out: int, seed: int) -> ProjectorMixture:
    import torch

    torch.manual_seed(seed)
    return ProjectorMixture(ProjectorConfig(d_in, d_out, 32, ("mix", "T")))


@pytest.fixture()
def work(tmp_path, shared_data):
    """Captions and farm photos embedded in `s` (text, images) and `e` (text); a combination e -> s and a
    displacement s -> e saved as checkpoints; descriptions of the displacement alone and of the two in sequence."""
    pools = [parse_pool(f"cap=text:{shared_data}/text/multi30k/train.en.gz?stop=40"),
             parse_pool(f"farm=image:{shared_data}/gcompris-farm/manifest.jsonl")]
    for spec in (BASE, EXPERT):
        embed_pools(tmp_path, SpaceSpec(spec["name"], spec["encoder"], spec["options"]), pools, progress=False)
    bonds = {"comb": (_projector(20, 24, 0), "combination", "e", "s"),
             "disp": (_projector(24, 20, 1), "displacement", "s", "e")}
    for folder, (projector, kind, source, target) in bonds.items():
        dims = {"s": 24, "e": 20}
        save_bond_checkpoint(tmp_path / folder, projector, kind=kind, source={"id": source, "dim": dims[source]},
                             target={"id": target, "dim": dims[target]}, modalities=["text", "image"])
    encoders = (f"encoders:\n  s: {{kind: tiny, options: {json.dumps(BASE['options'])}}}\n"
                f"  e: {{kind: tiny, options: {json.dumps(EXPERT['options'])}}}\nbase: s\n")
    displacement = "  - {name: d, kind: displacement, expert: e, checkpoint: disp, factors: {text: 0.3}}\n"
    (tmp_path / "alone.yaml").write_text(f"format_version: 1\nname: alone\n{encoders}bonds:\n{displacement}")
    (tmp_path / "sequence.yaml").write_text(
        f"format_version: 1\nname: sequence\n{encoders}bonds:\n"
        "  - {name: c, kind: combination, experts: {e: {checkpoint: comb}}, factors: {text: 0.8}}\n"
        f"{displacement}presets:\n  english: {{d: {{text: 0.6}}}}\n  multilingual: {{d: {{text: 0.3}}}}\n"
        "default_preset: multilingual\n")
    return tmp_path, {name: b[0] for name, b in bonds.items()}, {p.name: p for p in pools}


def test_a_space_of_one_bond_scores_as_the_bond_alone(work):
    folder, projectors, pools = work
    side = load_side(folder / "alone.yaml", projectors["disp"], folder, ("s", "e"))
    alone = Leaves(folder, "s", "e", projectors["disp"], "displacement")
    through = Leaves(folder, "s", "e", projectors["disp"], "displacement", side)
    for pool in pools.values():
        for f in (0.0, 0.4, 1.0):
            np.testing.assert_allclose(through.side("bonded", pool, f), alone.side("bonded", pool, f), atol=2e-6)
    assert side.summary() == {"name": "alone", "file": str(folder / "alone.yaml"), "bonds": ["d"], "swept": "d",
                              "default_preset": None}
    # a description whose encoders have other names than the work folder's spaces: mapped, the same vectors
    text = (folder / "alone.yaml").read_text()
    (folder / "renamed.yaml").write_text(text.replace("  s: {", "  base: {").replace("  e: {", "  expert: {")
                                         .replace("base: s", "base: base").replace("expert: e", "expert: expert"))
    renamed = load_side(folder / "renamed.yaml", projectors["disp"], folder, ("s", "e"), {"base": "s", "expert": "e"})
    renamed_leaves = Leaves(folder, "s", "e", projectors["disp"], "displacement", renamed)
    np.testing.assert_array_equal(renamed_leaves.side("bonded", pools["cap"], 0.4),
                                  through.side("bonded", pools["cap"], 0.4))


def test_a_displacement_behind_a_combination_is_both_formulas_in_sequence(work):
    folder, projectors, pools = work
    side = load_side(folder / "sequence.yaml", projectors["disp"], folder, ("s", "e"))
    through = Leaves(folder, "s", "e", projectors["disp"], "displacement", side)
    s_text, e_text = (load_embeddings(folder, space, "cap")[1] for space in ("s", "e"))
    combined = combine(s_text, projectors["comb"].project(e_text, normalize=False), 0.8)  # the combination's 0.8
    for g in (0.0, 0.3, 1.0):
        expected = displace(projectors["disp"].project(combined.astype(np.float32), normalize=False), e_text, g)
        np.testing.assert_allclose(through.side("bonded", pools["cap"], g), expected, atol=2e-6)
    photos = load_embeddings(folder, "s", "farm")[1]  # a photo reaches e only through the displacement
    np.testing.assert_allclose(through.side("bonded", pools["farm"], 0.5),
                               normalize(projectors["disp"].project(photos, normalize=False)), atol=2e-6)
    assert side.preset_factors() == {"english": 0.6, "multilingual (default)": 0.3}
    assert side.summary()["bonds"] == ["c", "d"] and side.summary()["swept"] == "d"
    # the combination is found by its own weights, and swept while the displacement stays at the default preset
    inner = SpaceSide(side.space, projectors["comb"])
    assert inner.bond == "c" and inner.mixing("text", 0.5).factors == {"c": {"text": 0.5}, "d": {"text": 0.3}}


@pytest.mark.models
def test_an_expert_with_conse_images_mixes_photos_at_their_own_factor(work):
    """An expert encoder that embeds photos as ConSE (e5's `conse_images`) stands in from the work folder's
    posteriors and class names: the combination mixes photos at the image factor, which the text sweep leaves."""
    from bonds.encoders.conse import imagenet_classnames
    from training.conse import conse, conse_vectors, load_posteriors, top_of
    from training.evaluate import write_prompt_pool

    folder, projectors, pools = work
    expert = json.dumps({**EXPERT["options"], "conse_images": True})
    (folder / "photos.yaml").write_text(
        f"format_version: 1\nname: photos\nencoders:\n  s: {{kind: tiny, options: {json.dumps(BASE['options'])}}}\n"
        f"  e: {{kind: tiny, options: {expert}}}\nbase: s\nbonds:\n"
        "  - {name: c, kind: combination, experts: {e: {checkpoint: comb}}, factors: {text: 0.8, image: 0.4}}\n")
    side = load_side(folder / "photos.yaml", projectors["comb"], folder, ("s", "e"))
    through = Leaves(folder, "e", "s", projectors["comb"], "combination", side)
    photos_e = conse_vectors(folder, "e", pools["farm"])
    expected = combine(load_embeddings(folder, "s", "farm")[1], projectors["comb"].project(photos_e, normalize=False),
                       0.4)
    for f in (0.0, 1.0):  # the sweep moves text alone
        np.testing.assert_allclose(through.side("bonded", pools["farm"], f), expected, atol=2e-6)
    alone = Leaves(folder, "e", "s", projectors["comb"], "combination")  # the bond alone: e has no photos here
    np.testing.assert_array_equal(alone.side("bonded", pools["farm"], 0.5), load_embeddings(folder, "s", "farm")[1])
    text = (folder / "photos.yaml").read_text()
    # the encoder's own topk: its photos mix that many classes (cut from the 10 the posteriors hold)
    (folder / "few.yaml").write_text(text.replace('"conse_images": true', '"conse_images": true, "topk": 3'))
    few = Leaves(folder, "e", "s", projectors["comb"], "combination",
                 load_side(folder / "few.yaml", projectors["comb"], folder, ("s", "e")))
    _, idx, w = load_posteriors(folder, "farm")
    names = load_embeddings(folder, "e", write_prompt_pool(folder, imagenet_classnames()).name)[1]
    photos_3 = normalize(conse(*top_of(idx, w, 3), names))
    assert not np.allclose(photos_3, photos_e, atol=1e-3)
    np.testing.assert_allclose(few.side("bonded", pools["farm"], 0.5), combine(
        load_embeddings(folder, "s", "farm")[1], projectors["comb"].project(photos_3, normalize=False), 0.4), atol=2e-6)
    (folder / "many.yaml").write_text(text.replace('"conse_images": true', '"conse_images": true, "topk": 20'))
    many = Leaves(folder, "e", "s", projectors["comb"], "combination",
                  load_side(folder / "many.yaml", projectors["comb"], folder, ("s", "e")))
    with pytest.raises(ValueError, match="topk 20 cannot be scored from them"):
        many.side("bonded", pools["farm"], 0.5)
    (folder / "image_preset.yaml").write_text(text + "presets:\n  more: {c: {text: 0.8, image: 0.9}}\n")
    with pytest.raises(ValueError, match="preset 'more' changes more than 'c''s text factor"):
        load_side(folder / "image_preset.yaml", projectors["comb"], folder, ("s", "e")).preset_factors()


def test_descriptions_that_cannot_stand_in_are_refused(work):
    folder, projectors, _ = work
    with pytest.raises(ValueError, match=r"no bond of space 'alone' has the evaluated projector.*its bonds: d"):
        load_side(folder / "alone.yaml", projectors["comb"], folder, ("s", "e"))
    with pytest.raises(ValueError, match=r"encoder\(s\) e are not spaces of the work folder \(it has s, x\)"):
        load_side(folder / "alone.yaml", projectors["disp"], folder, ("s", "x"))
    text = (folder / "sequence.yaml").read_text().replace("english: {d: {text: 0.6}}",
                                                           "english: {d: {text: 0.6}, c: {text: 0.2}}")
    (folder / "moved.yaml").write_text(text)
    with pytest.raises(ValueError, match="preset 'english' changes more than 'd''s text factor"):
        load_side(folder / "moved.yaml", projectors["disp"], folder, ("s", "e")).preset_factors()
    with pytest.raises(ValueError, match="missing.yaml"):
        load_side(folder / "missing.yaml", projectors["disp"], folder, ("s", "e"))
    # a starter whose photos the work folder embedded at another topk than the description serves
    info = json.loads((folder / "embeddings/s/space.json").read_text())
    (folder / "embeddings/st").mkdir()
    info["spec"]["encoder"] = "starter"
    (folder / "embeddings/st/space.json").write_text(json.dumps(info))
    starter = (folder / "alone.yaml").read_text().replace(f"kind: tiny, options: {json.dumps(BASE['options'])}",
                                                          "kind: starter, options: {topk: 3}")
    (folder / "starter.yaml").write_text(starter)
    with pytest.raises(ValueError, match=r"'s' serves photos with topk 3, but the work folder's space 'st' embedded "
                                         r"them with topk 10; embed them again with --encoder-option topk=3"):
        load_side(folder / "starter.yaml", projectors["disp"], folder, ("st", "e"), spaces={"s": "st"})


def test_eval_1k_through_a_space_prints_its_presets(work, cli, shared_data, monkeypatch):
    """`eval-1k --space`: the bond's sweep through the whole space, the space's presets as its rows."""
    folder, _, _ = work
    en = json.loads((shared_data / "text/imagenet-classnames/en_classnames.json").read_text())["imagenet1k"]
    (folder / "names.json").write_text(json.dumps({"up": [n.upper() for n in en]}))
    recipe = folder / "suite.yaml"
    recipe.write_text(f"languages:\n  en: {shared_data}/text/imagenet-classnames/en_classnames.json#imagenet1k\n"
                      f"  up: {folder}/names.json#up\n")
    monkeypatch.chdir(folder)
    out = cli("train", "eval-1k", "--tasks", recipe, "--checkpoint", folder / "disp", "--workdir", folder,
              "--space", folder / "sequence.yaml", "--factor", "0", "--factor", "1", "--report", folder / "r.json",
              "--plot", folder / "p.png", "--no-progress")
    assert "english (f=0.6)" in out.output and "multilingual (default) (f=0.3)" in out.output
    report = json.loads((folder / "r.json").read_text())
    assert report["factors"] == [0.0, 0.3, 0.6, 1.0] and report["space"]["bonds"] == ["c", "d"]
    # the names at f = 0 are the expert's own text: the sequence changes nothing there
    suite = eval1k.load_suite(recipe, folder)
    alone = eval1k.evaluate_1k(folder, suite, _projector(24, 20, 1), source="s", target="e", kind="displacement",
                               factors=(0.0,), progress=False)
    assert report["parts"]["names"]["bonded"]["0.0"] == alone["parts"]["names"]["bonded"]["0.0"]
