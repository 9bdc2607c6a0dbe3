"""All five stages through `freebind train ...` on real shared data with tiny encoders, then the
exported checkpoint served by the library: its bonded vectors equal the ones eval scored."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bonds.bond import CombinationBond
from bonds.checkpoint import load_bond_checkpoint
from bonds.encoders import create_encoder
from bonds.space import EncoderSpace
from training.embed import load_embeddings
from training.pools import list_pool, parse_pool

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data, cli):
    """expert `e5ish` (text only, 24-d) combined into base `base` (text, image, audio, 16-d)."""
    work = tmp_path_factory.mktemp("train")
    d = shared_data
    pools = [f"m30k=text:{d}/text/multi30k/train.en.gz?stop=300",
             f"coco=text:{d}/coco-mini/captions.jsonl?field=captions",
             f"cifar=image:{d}/cifar10-train-3k/manifest.jsonl?step=15",
             f"fsdd=audio:{d}/fsdd-dev/manifest.jsonl?step=15"]
    pool_args = [a for p in pools for a in ("--pool", p)]
    common = ["--workdir", work, "--no-progress"]
    cli("train", "embed", "--space", "base", "--encoder", "tiny", "--encoder-option", "dim=16", *pool_args, *common)
    cli("train", "embed", "--space", "e5ish", "--encoder", "tiny", "--encoder-option", "dim=24",
        "--encoder-option", "seed=1", "--encoder-option", 'modalities=["text"]', "--shard-size", "128", *pool_args,
        *common)
    out = cli("train", "pairs", "--source", "e5ish", "--target", "base", "--pool", "m30k", "--pool", "coco",
              "--pool", "cifar", "--pool", "fsdd", "--bank", "m30k", "--bank", "coco", "--k", "32", *common)
    pairs = json.loads(out.stdout.strip().splitlines()[-1])
    cli("train", "fit", "--kind", "combination", "--epochs", "1", "--hidden", "64", *common)
    classes = json.dumps({c: c for c in CIFAR})
    tasks = work / "tasks.yaml"
    tasks.write_text(
        "retrieval:\n"
        f"  - {{name: coco, group: english, query: 'q=text:{d}/coco-mini/captions.jsonl?field=captions&step=5',"
        f" gallery: 'g=text:{d}/coco-mini/captions.jsonl?field=captions&start=1&step=5'}}\n"
        f"  - {{name: m30k_de_en, group: multilingual, query: 'de=text:{d}/text/multi30k/train.de.gz?start=28900',"
        f" gallery: 'en=text:{d}/text/multi30k/train.en.gz?start=28900'}}\n"
        "zeroshot:\n"
        f"  - {{name: cifar, group: english, "
        f"items: 'ci=image:{d}/cifar10-train-3k/manifest.jsonl?label=label&start=7&step=15',"
        f" classes: {classes}, templates: ['a photo of a {{c}}.', 'a {{c}}']}}\n"
    )
    cli("train", "eval", "--tasks", tasks, "--factor", "0", "--factor", "0.5", "--factor", "1", *common)
    cli("train", "export", "--out", work / "bond", "--dtype", "float16", "--workdir", work)
    return work, pairs


def test_stages_write_what_the_next_reads(trained):
    work, pairs = trained
    assert list(pairs["centres"]) == ["T", "V", "A"] and pairs["centres"]["V"]["pairs"] == 200
    assert list(pairs["modes"]) == ["mix", "A", "T", "V", "AT", "AV", "TV"]
    fitted = json.loads((work / "fit" / "fit.json").read_text())
    assert fitted["finished"] and fitted["config"]["epochs"] == 1 and fitted["samples_per_second_this_run"] > 0
    assert (work / "eval" / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_report_covers_every_space_and_factor(trained):
    work, _ = trained
    report = json.loads((work / "eval" / "report.json").read_text())
    assert report["base"] == "base" and report["expert"] == "e5ish"
    assert set(report["suggested_presets"]) == {"english", "multilingual"}
    cifar, coco = report["tasks"]["cifar"], report["tasks"]["coco"]
    assert cifar["source"] is None and cifar["target"]["top1"] >= 0  # the text-only expert has no images
    assert coco["bonded"]["0.0"] == coco["target"]  # f = 0: the base space, untouched
    assert set(coco["bonded"]) == {"0.0", "0.5", "1.0"} and "q2g_R@10" in coco["bonded"]["0.5"]


def test_exported_checkpoint_serves_the_vectors_eval_scored(trained, shared_data):
    work, _ = trained
    projector, manifest = load_bond_checkpoint(work / "bond", kind="combination", d_in=24, d_out=16)
    assert manifest.weights_dtype == "float16" and manifest.training["epochs"] == 1
    assert manifest.data["centres"]["A"]["pairs"] == 100 and manifest.data["spaces"]["source"]["encoder"] == "tiny"
    assert sorted(projector.heads) == sorted(["mix", "A", "T", "V", "AT", "AV", "TV"])
    base = EncoderSpace(create_encoder("tiny", dim=16), name="base")
    expert = EncoderSpace(create_encoder("tiny", dim=24, seed=1, modalities=["text"]), name="e5ish")
    bond = CombinationBond("e5", base, {"e5ish": expert}, {"e5ish": projector}, factors={"text": 0.5})
    captions = list_pool(parse_pool(f"q=text:{shared_data}/coco-mini/captions.jsonl?field=captions&step=5")).sources
    served = bond.embed("text", captions)
    from bonds.reference import combine

    cached = combine(load_embeddings(work, "base", "q")[1],
                     projector.project(load_embeddings(work, "e5ish", "q")[1], normalize=False), 0.5)
    np.testing.assert_allclose(served, cached, atol=2e-3)  # float16 weights on one side only


def test_errors_are_messages_not_tracebacks(cli, tmp_path):
    result = cli("train", "embed", "--space", "x", "--pool", "bad", "--encoder", "tiny", "--workdir", tmp_path,
                 ok=False)
    assert result.exit_code == 2 and "NAME=MODALITY:PATH" in result.output
    result = cli("train", "fit", "--kind", "displacement", "--workdir", tmp_path, ok=False)
    assert result.exit_code == 2 and "run `pairs` first" in result.output


@pytest.fixture(scope="module")
def small(tmp_path_factory, cli):
    """A finished bond on generated data: `ex` (tiny, text only, 24-d) combined into `base` (tiny, 16-d)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    words = "a dog cat bird car red blue big small runs sits on the grass road tree".split()
    (root / "text.txt").write_text("".join(" ".join(rng.choice(words, 5)) + f" {i}\n" for i in range(80)))
    (root / "imgs").mkdir()
    for i in range(12):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(root / "imgs" / f"{i:02d}.png")
    work = root / "work"
    common = ["--workdir", work, "--no-progress"]
    pools = ["--pool", f"t=text:{root / 'text.txt'}?stop=60", "--pool", f"v=image:{root / 'imgs'}"]
    cli("train", "embed", "--space", "base", "--encoder", "tiny", "--encoder-option", "dim=16", *pools, *common)
    cli("train", "embed", "--space", "ex", "--encoder", "tiny", "--encoder-option", "dim=24", "--encoder-option",
        'modalities=["text"]', *pools, *common)
    cli("train", "pairs", "--source", "ex", "--target", "base", "--pool", "t", "--pool", "v", "--bank", "t", "--k", "8",
        *common)
    cli("train", "fit", "--kind", "combination", "--epochs", "1", "--hidden", "16", "--batch-size", "32", *common)
    cli("train", "export", "--out", root / "ck", "--source-id", "renamed-ex", "--workdir", work)
    (root / "tasks.yaml").write_text(f"retrieval:\n  - {{name: r, "
                                     f"query: 'q=text:{root / 'text.txt'}?start=60&stop=70', "
                                     f"gallery: 'g=text:{root / 'text.txt'}?start=70'}}\n")
    return root


@pytest.fixture()
def copy(small, tmp_path):
    """A private copy of the small bond's folders, for commands that may write into them."""
    import shutil

    shutil.copytree(small, tmp_path / "c")
    return tmp_path / "c"


def one_error_line(result, says: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.output


def test_eval_of_a_checkpoint_checks_that_it_is_this_bond(cli, copy):
    from bonds.checkpoint import save_bond_checkpoint
    from bonds.projector import ProjectorConfig, ProjectorMixture

    common = ["--tasks", copy / "tasks.yaml", "--factor", "0.5", "--workdir", copy / "work", "--no-progress"]
    cli("train", "eval", "--checkpoint", copy / "ck", *common)  # its own bond, exported under another source id
    projector = ProjectorMixture(ProjectorConfig(24, 16, 8, ("mix",)))  # the same dims, other spaces or kind
    for name, kind, ends in [("other", "combination", ("some_other", "yet_another")),
                             ("kind", "displacement", ("ex", "base"))]:
        save_bond_checkpoint(copy / name, projector, kind=kind, source={"id": ends[0], "dim": 24},
                             target={"id": ends[1], "dim": 16}, modalities=["text"])
        one_error_line(cli("train", "eval", "--checkpoint", copy / name, *common, ok=False),
                       f"holds a {kind} bond {ends[0]} -> {ends[1]}, but the bond of")


def test_export_refuses_a_refit_that_did_not_finish(cli, copy):
    import shutil

    work = copy / "work"
    shutil.rmtree(work / "fit" / "state")  # as an error message suggests, to start over with other settings
    cli("train", "fit", "--kind", "combination", "--epochs", "2", "--hidden", "8", "--stop-after", "1",
        "--workdir", work, "--no-progress")
    one_error_line(cli("train", "export", "--out", copy / "ck2", "--workdir", work, ok=False), "is not finished")
    one_error_line(cli("train", "eval", "--tasks", copy / "tasks.yaml", "--workdir", work, ok=False), "is not finished")


PAIRS = ["train", "pairs", "--source", "ex", "--target", "base", "--pool", "t", "--pool", "v", "--no-progress"]


@pytest.mark.parametrize("args, tasks, says", [
    ([*PAIRS, "--bank", "t", "--k", "0"], None, "k (neighbours per query) must be >= 1"),
    ([*PAIRS, "--bank", "t", "--block", "0"], None, "block (queries per retrieval block) must be >= 1"),
    ([*PAIRS, "--bank", "t", "--tau", "0"], None, "tau (retrieval softmax temperature) must be a positive number"),
    (PAIRS, None, "needs a memory bank; add --bank POOL"),
    (["train", "eval"], "retrieval:\n  - {name: r, query: \"q=text:x.txt\n", "not valid YAML/JSON at line"),
    (["train", "eval"], "zeroshot:\n  - {name: z, items: 'i=image:x', classes: [red, blue]}\n", "classes must map"),
    (["train", "eval"], "retrieval:\n  - {query: 'q=text:x.txt'}\n", "a retrieval task has no name"),
    (["train", "embed", "--space", "new", "--encoder", "tiny", "--encoder-option", "bogus=1",
      "--pool", "t=text:{text}"], None, "encoder 'tiny' does not take the options {'bogus': 1}"),
    (["train", "embed", "--space", "new", "--encoder", "tiny", "--pool", "e=image:{empty}"], None,
     "holds no image files"),
    (["train", "fit", "--kind", "combination", "--device", "cuda"], None, "CUDA is not available"),
    (["train", "fit", "--kind", "combination", "--batch-size", "1"], None, "batch size must be >= 2"),
    (["train", "fit", "--kind", "combination", "--batch-size", "0"], None, "batch size must be >= 2"),
    (["train", "fit", "--kind", "combination", "--epochs", "0"], None, "epochs must be >= 1"),
])
def test_user_errors_are_one_line_messages(cli, copy, monkeypatch, args, tasks, says):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (copy / "empty").mkdir()
    places = {"text": copy / "text.txt", "empty": copy / "empty"}
    args = [a.format(**places) for a in args]
    if tasks is not None:
        (copy / "bad.yaml").write_text(tasks)
        args += ["--tasks", copy / "bad.yaml"]
    one_error_line(cli(*args, "--workdir", copy / "work", ok=False), says)
