"""The 1,000-class evaluation: its top-1 rule, and the three spaces it scores on tiny spaces and real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bonds.projector import ProjectorConfig, ProjectorMixture
from training import eval1k
from training.embed import SpaceSpec, embed_pools
from training.evaluate import DEFAULT_FACTORS


def test_top1_needs_a_strict_best_among_the_allowed_classes():
    names = np.eye(3, dtype=np.float32)
    images = np.array([[1, 0.2, 0], [0, 1, 1], [0.1, 0.9, 0], [0.2, 0.1, 0.8]], dtype=np.float32)
    # row 1 ties classes 1 and 2: wrong even though both are allowed; row 3's best (2) is not allowed
    assert eval1k.top1(images, names, [{0}, {1, 2}, {1}, {0, 1}]) == 50.0
    with pytest.raises(ValueError, match="NaN"):
        eval1k.top1(np.full((1, 3), np.nan, np.float32), names, [{0}])


@pytest.fixture()
def suite(tmp_path, shared_data, monkeypatch):
    """English names (the shared list), a second "language" that writes them upside down, the farm photos;
    `s` embeds text and images (the base), `e` text only (the expert)."""
    en = json.loads((shared_data / "text/imagenet-classnames/en_classnames.json").read_text())["imagenet1k"]
    (tmp_path / "names.json").write_text(json.dumps({"up": [n.upper() for n in en], "rev": en[::-1]}))
    (tmp_path / "photo_classes.json").write_text(json.dumps({"farm": {"Cat": list(range(281, 286)), "Dog": [151]}}))
    recipe = tmp_path / "suite.yaml"
    recipe.write_text(f"languages:\n  en: {shared_data}/text/imagenet-classnames/en_classnames.json#imagenet1k\n"
                      f"  up: {tmp_path}/names.json#up\n"
                      f"photos:\n  - {{pool: 'farm=image:{shared_data}/gcompris-farm/manifest.jsonl?label=title', "
                      "classes: photo_classes.json#farm}\n")
    monkeypatch.chdir(tmp_path)
    loaded = eval1k.load_suite(recipe, tmp_path)
    embed_pools(tmp_path, SpaceSpec("s", "tiny", {"dim": 24}), loaded.pools(), progress=False)
    embed_pools(tmp_path, SpaceSpec("e", "tiny", {"dim": 20, "seed": 1, "modalities": ["text"]}), loaded.pools(),
                progress=False)
    return tmp_path, recipe, loaded


def projector(d_in, d_out):
    import torch

    torch.manual_seed(0)
    return ProjectorMixture(ProjectorConfig(d_in, d_out, 32, ("mix", "T")))


def test_reference_base_and_bonded_spaces_are_scored(suite):
    work, _, loaded = suite
    report = eval1k.evaluate_1k(work, loaded, projector(20, 24), source="e", target="s", kind="combination",
                                factors=(0.0, 0.5, 1.0), progress=False)
    names, farm = report["parts"]["names"], report["parts"]["farm"]
    assert (report["base"], report["expert"], names["items"], farm["items"]) == ("s", "e", 1000, 2)
    # the English names are the prototypes themselves, so only names embedded alike tie (the duplicated
    # "missile" and "sunglasses"; the tiny encoder's hashed word buckets collide); it lower-cases words, so
    # upper-case names embed the same
    for space in ("reference", "base"):
        assert names[space]["en"] == names[space]["up"] <= 99.6
    # a combination at f = 0 is the base space (up to float rounding of exact ties); its photos stay the
    # base's photos whatever the factor
    assert names["bonded"]["0.0"] == pytest.approx(names["base"], abs=0.2) and farm["bonded"]["0.0"] == farm["base"]
    assert set(names["bonded"]) == {"0.0", "0.5", "1.0"}
    text = eval1k.table(report, {"english": 0.5})
    assert "reference: ConSE in e" in text and "english (f=0.5)" in text and "% of reference" in text
    assert text.startswith("combination e -> s: zero-shot top-1 among the 1,000 ImageNet class names")


def test_a_displacement_projects_the_photos_into_the_expert(suite):
    work, _, loaded = suite
    report = eval1k.evaluate_1k(work, loaded, projector(24, 20), source="s", target="e", kind="displacement",
                                factors=(0.0,), progress=False)
    # text at f = 0 is the expert's own, photos go through an untrained projector: far below the reference
    names = report["parts"]["names"]
    assert (report["base"], report["expert"]) == ("s", "e") and names["bonded"]["0.0"]["en"] < names["reference"]["en"]


def test_suite_files_are_checked(tmp_path):
    recipe = tmp_path / "suite.yaml"
    (tmp_path / "short.json").write_text(json.dumps({"k": ["a", "b"]}))
    cases = [("photos: []\n", "languages"), (f"languages: {{en: {tmp_path}/short.json#k}}\n", "list of 1,000")]
    for text, says in cases:
        recipe.write_text(text)
        with pytest.raises(ValueError, match=says):
            eval1k.load_suite(recipe, tmp_path)


def test_a_checkpoint_alone_is_evaluated_in_a_fresh_work_folder(suite, cli):
    """`eval-1k --checkpoint` where the work folder has no pairs and no embeddings: the manifest names the
    spaces the bond was trained between and how to build them; the result is the same as in the folder
    they were embedded in."""
    from bonds.checkpoint import save_bond_checkpoint

    work, recipe, loaded = suite
    bond = projector(20, 24)
    specs = {"source": SpaceSpec("e", "tiny", {"dim": 20, "seed": 1, "modalities": ["text"]}).to_dict(),
             "target": SpaceSpec("s", "tiny", {"dim": 24}).to_dict()}
    save_bond_checkpoint(work / "ckpt", bond, kind="combination", source={"id": "e", "dim": 20},
                         target={"id": "s", "dim": 24}, modalities=["text", "image"],
                         data={"pairs": {"source": "e", "target": "s"}, "spaces": specs})
    fresh = work / "fresh"
    out = cli("train", "eval-1k", "--tasks", recipe, "--checkpoint", work / "ckpt", "--workdir", fresh,
              "--preset", "english=0.55", "--report", fresh / "r.json", "--plot", fresh / "p.png", "--no-progress")
    assert "english (f=0.55)" in out.output and (fresh / "p.png").is_file()
    report = json.loads((fresh / "r.json").read_text())
    factors = sorted((*DEFAULT_FACTORS, 0.55))  # a preset is a row of the whole sweep
    assert report["factors"] == factors
    expected = eval1k.evaluate_1k(work, loaded, bond, source="e", target="s", kind="combination", factors=factors,
                                  progress=False)
    assert report["parts"] == expected["parts"]
    assert cli("train", "eval-1k", "--tasks", recipe, "--workdir", work / "empty", ok=False).exit_code == 2
