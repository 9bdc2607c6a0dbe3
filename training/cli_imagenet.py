"""`freebind train` commands about the starter classifier's 1,000 ImageNet classes: `prepare-classes`
(their names, descriptions and WordNet synonyms as text pools), `posteriors` (image pools classified
into them, for ConSE pairs) and `eval-1k` (zero-shot among them in five languages, beside ConSE built in
the expert). training.cli adds them to `freebind train`; each is a thin wrapper over the library.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from training.cli_options import DEVICE, NO_PROGRESS, WORKDIR, fail

app = typer.Typer()

WORDNET = Path("/usr/share/wordnet/data.noun")


@app.command("prepare-classes")
def prepare_classes_command(
    out: Path = typer.Option(..., "--out", envvar="FREEBIND_TRAIN_CLASSES_OUT", help="folder for the text files"),
    source: Path = typer.Option(WORDNET, "--source", envvar="FREEBIND_TRAIN_WORDNET_SOURCE",
                                help="WordNet data.noun (Debian wordnet-base)"),
) -> None:
    """Write the 1,000 classes' vocabulary: imagenet_names.txt (line i = class i), imagenet_descriptions.txt,
    wordnet_lemmas.txt (synonyms of every picturable WordNet noun synset)."""
    from training.corpora import imagenet_descriptions, imagenet_names, wordnet_lemmas

    try:
        lines = {"imagenet_names": imagenet_names(out / "imagenet_names.txt"),
                 "imagenet_descriptions": imagenet_descriptions(out / "imagenet_descriptions.txt"),
                 "wordnet_lemmas": wordnet_lemmas(out / "wordnet_lemmas.txt", source)}
    except FileNotFoundError as exc:
        fail(str(exc))
    typer.echo(json.dumps({"out": str(out), "lines": lines}))


@app.command("posteriors")
def posteriors_command(
    pool: list[str] = typer.Option(..., "--pool", envvar="FREEBIND_TRAIN_POOL",
                                   help="image pool to classify, repeatable"),
    views: int = typer.Option(1, "--views", envvar="FREEBIND_TRAIN_VIEWS",
                              help="views per photo: the photo itself, then random crops/flips/lighting"),
    topk: int = typer.Option(10, "--topk", envvar="FREEBIND_TRAIN_TOPK",
                             help="classes kept per view (the starter's 10)"),
    seed: int = typer.Option(0, "--seed", envvar="FREEBIND_TRAIN_SEED", help="seed of the perturbations"),
    workdir: Path = WORKDIR, device: str = DEVICE, no_progress: bool = NO_PROGRESS,
) -> None:
    """Classify image pools with the starter's ImageNet classifier (top-k weights per view) for ConSE pairs."""
    from training.conse import ViewConfig, classify_pool
    from training.pools import parse_pool

    rows = {}
    try:
        for text in pool:
            spec = parse_pool(text)
            rows[spec.name] = classify_pool(workdir, spec, ViewConfig(views, topk, seed), device=device or "cpu",
                                            progress=not no_progress)["rows"]
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(json.dumps({"rows": rows}))


@app.command("eval-1k")
def eval_1k_command(
    tasks: Path = typer.Option(Path("training/recipes/imagenet1k_eval.yaml"), "--tasks",
                               envvar="FREEBIND_TRAIN_1K_TASKS",
                               help="the 1,000-class recipe: languages' name files and held-out photo sets"),
    checkpoint: Path = typer.Option(None, "--checkpoint", envvar="FREEBIND_TRAIN_CHECKPOINT",
                                    help="evaluate an exported bond folder instead of the work folder's fit (a "
                                         "fresh work folder embeds in the spaces its manifest names)"),
    factor: list[float] = typer.Option([], "--factor", envvar="FREEBIND_TRAIN_FACTOR",
                                       help="factors to sweep (default 0, 0.1, ..., 1); presets are added"),
    preset: list[str] = typer.Option([], "--preset", envvar="FREEBIND_TRAIN_PRESET",
                                     help="NAME=FACTOR rows of the printed table (default: every factor)"),
    space: Path = typer.Option(None, "--space", envvar="FREEBIND_TRAIN_1K_SPACE",
                               help="score the bonded side as this space description serves the bond (all its "
                                    "bonds in order); its presets are the table's rows"),
    report: Path = typer.Option(None, "--report", envvar="FREEBIND_TRAIN_REPORT", help="JSON report path"),
    plot: Path = typer.Option(None, "--plot", envvar="FREEBIND_TRAIN_PLOT", help="PNG plot path"),
    workdir: Path = WORKDIR, device: str = DEVICE, no_progress: bool = NO_PROGRESS,
) -> None:
    """ImageNet-1k zero-shot in five languages for the base, the bonded space and ConSE built in the expert."""
    from training import eval1k
    from training.evaluate import DEFAULT_FACTORS
    from training.export import load_bond, trained_spaces
    from training.space_side import load_side

    try:
        presets = {name: float(value) for name, _, value in (p.partition("=") for p in preset)}
        source, target, kind, projector = load_bond(workdir, checkpoint)
        through = load_side(space, projector, workdir, (source, target)) if space else None
        presets.update(through.preset_factors() if through else {})
        suite = eval1k.load_suite(tasks, workdir)
        factors = tuple(sorted(set(factor or DEFAULT_FACTORS) | set(presets.values())))  # presets: rows of the sweep
        specs = trained_spaces(checkpoint) if checkpoint else None
        result = eval1k.evaluate_1k(workdir, suite, projector, source=source, target=target, kind=kind,
                                    factors=factors, device=device, progress=not no_progress, specs=specs,
                                    through=through)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc))
    eval1k.write(result, report or workdir / "eval" / "report-1k.json")
    eval1k.plot(result, plot or workdir / "eval" / "plot-1k.png")
    typer.echo(eval1k.table(result, presets or None))
