"""`freebind train ...`: one subcommand per stage, each a thin wrapper over the library function.

All stages share a work folder (`--workdir`); each stage reads what the one before wrote and skips
what is already done, so any command can be re-run after an interruption. Every option also reads
an environment variable `FREEBIND_TRAIN_<OPTION>`. The commands about the starter classifier's 1,000
ImageNet classes (prepare-classes, posteriors, eval-1k) live in training.cli_imagenet.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from training import cli_imagenet
from training.cli_options import DEVICE, NO_PROGRESS, WORKDIR, fail

app = typer.Typer(help="Train a bond: embed -> pairs -> fit -> eval -> export.", no_args_is_help=True,
                  add_completion=False)
app.add_typer(cli_imagenet.app)  # prepare-classes, posteriors, eval-1k: commands at this level, no group
log = logging.getLogger(__name__)


@app.command("embed")
def embed_command(
    space: str = typer.Option(..., "--space", envvar="FREEBIND_TRAIN_SPACE",
                              help="name of the space's embedding folder"),
    encoder: str = typer.Option(None, "--encoder", envvar="FREEBIND_TRAIN_ENCODER",
                                help="encoder registry name (e.g. tiny, starter, e5)"),
    encoder_option: list[str] = typer.Option([], "--encoder-option", envvar="FREEBIND_TRAIN_ENCODER_OPTION",
                                             help="KEY=VALUE encoder option (JSON values parse), repeatable"),
    description: str = typer.Option(None, "--description", envvar="FREEBIND_TRAIN_DESCRIPTION",
                                    help="a space description file (instead of --encoder)"),
    pool: list[str] = typer.Option(..., "--pool", envvar="FREEBIND_TRAIN_POOL",
                                   help="NAME=MODALITY:PATH[?field=&label=&start=&stop=&step=], repeatable"),
    batch_size: int = typer.Option(64, "--batch-size", envvar="FREEBIND_TRAIN_BATCH_SIZE",
                                   help="items per encoder call"),
    shard_size: int = typer.Option(8192, "--shard-size", envvar="FREEBIND_TRAIN_SHARD_SIZE",
                                   help="items per shard file"),
    dtype: str = typer.Option("float32", "--dtype", envvar="FREEBIND_TRAIN_DTYPE",
                              help="stored vectors: float32 or float16"),
    num_shards: int = typer.Option(1, "--num-shards", envvar="FREEBIND_TRAIN_NUM_SHARDS",
                                   help="split the work N ways (one machine computes every N-th shard)"),
    shard_index: int = typer.Option(0, "--shard-index", envvar="FREEBIND_TRAIN_SHARD_INDEX",
                                    help="which of the N ways this machine does, 0..N-1"),
    ray: bool = typer.Option(False, "--ray", envvar="FREEBIND_TRAIN_RAY", help="one Ray task per missing shard"),
    ray_address: str = typer.Option(None, "--ray-address", envvar="FREEBIND_TRAIN_RAY_ADDRESS",
                                    help="Ray cluster address (default: start a local Ray)"),
    workdir: Path = WORKDIR, device: str = DEVICE, no_progress: bool = NO_PROGRESS,
) -> None:
    """Encode pools in a space and write embedding shards (skips shards already written)."""
    from training.embed import SpaceSpec, embed_pools, embed_pools_ray, parse_options
    from training.pools import parse_pool

    if dtype not in ("float32", "float16"):
        fail(f"--dtype must be float32 or float16, got {dtype!r}")
    if bool(encoder) == bool(description):
        fail("give exactly one of --encoder or --description")
    try:
        spec = SpaceSpec(space, encoder, parse_options(encoder_option), description)
        pools = [parse_pool(p) for p in pool]
        if ray:
            written = embed_pools_ray(workdir, spec, pools, shard_size=shard_size, batch_size=batch_size, dtype=dtype,
                                      device=device, address=ray_address)
        else:
            written = embed_pools(workdir, spec, pools, shard_size=shard_size, batch_size=batch_size,
                                  num_shards=num_shards, shard_index=shard_index, dtype=dtype, device=device,
                                  progress=not no_progress)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc))
    typer.echo(json.dumps({"space": space, "written": written}))


@app.command("pairs")
def pairs_command(
    source: str = typer.Option(..., "--source", envvar="FREEBIND_TRAIN_SOURCE", help="space the projector reads"),
    target: str = typer.Option(..., "--target", envvar="FREEBIND_TRAIN_TARGET", help="space the projector writes"),
    pool: list[str] = typer.Option(..., "--pool", envvar="FREEBIND_TRAIN_PAIR_POOL",
                                   help="embedded pool name, repeatable"),
    bank: list[str] = typer.Option([], "--bank", envvar="FREEBIND_TRAIN_BANK",
                                   help="pool(s) of a modality both spaces have: the retrieval memory bank"),
    k: int = typer.Option(64, "--k", envvar="FREEBIND_TRAIN_K", help="neighbours the retrieval softmax runs over"),
    tau: float = typer.Option(0.01, "--tau", envvar="FREEBIND_TRAIN_TAU", help="retrieval softmax temperature tau_r"),
    block: int = typer.Option(1024, "--block", envvar="FREEBIND_TRAIN_BLOCK", help="queries per retrieval block"),
    bank_limit: int = typer.Option(None, "--bank-limit", envvar="FREEBIND_TRAIN_BANK_LIMIT",
                                   help="use the first N bank rows"),
    pseudo: str = typer.Option("own", "--pseudo", envvar="FREEBIND_TRAIN_PSEUDO",
                               help="own: (item, n(w.M)) pairs; both: also (n(w.M_s), n(w.M_t))"),
    mode: list[str] = typer.Option([], "--mode", envvar="FREEBIND_TRAIN_MODE",
                                   help="data modes to keep (default: all present)"),
    conse: list[str] = typer.Option([], "--conse", envvar="FREEBIND_TRAIN_CONSE",
                                    help="classified image pool (`posteriors`): ConSE pairs over --classes, "
                                         "repeatable"),
    classes: str = typer.Option(None, "--classes", envvar="FREEBIND_TRAIN_CLASSES",
                                help="the class-name text pool the posteriors index (line i = class i)"),
    retrieve: list[str] = typer.Option([], "--retrieve", envvar="FREEBIND_TRAIN_RETRIEVE",
                                       help="a --pool paired through the class names (--classes): its softmax over "
                                            "them in the source gives its target, a mixture of them; repeatable"),
    via_bank: list[str] = typer.Option([], "--via-bank", envvar="FREEBIND_TRAIN_VIA_BANK",
                                       help="a --pool embedded in only the space that reads it (text in a language "
                                            "the other's encoder does not know): paired through --bank; repeatable"),
    workdir: Path = WORKDIR, no_progress: bool = NO_PROGRESS,
) -> None:
    """Build FreeBind pseudo-pairs (same-item pairs, top-k softmax retrieval through a memory bank, ConSE)."""
    from training.pairs import PairsConfig, build_pairs

    config = PairsConfig(source, target, list(pool), list(bank), k, tau, block, bank_limit, pseudo, list(mode),
                         conse=list(conse), classes=classes, retrieve=list(retrieve),
                         via_bank=list(via_bank))
    try:
        summary = build_pairs(workdir, config, progress=not no_progress)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(json.dumps({"centres": summary["centres"], "modes": summary["modes"]}))


@app.command("fit")
def fit_command(
    kind: str = typer.Option(..., "--kind", envvar="FREEBIND_TRAIN_KIND", help="displacement or combination"),
    epochs: int = typer.Option(None, "--epochs", envvar="FREEBIND_TRAIN_EPOCHS",
                               help="epochs (default 5 displacement, 20 combination)"),
    lr: float = typer.Option(1e-3, "--lr", envvar="FREEBIND_TRAIN_LR", help="Adam learning rate"),
    batch_size: int = typer.Option(4096, "--batch-size", envvar="FREEBIND_TRAIN_FIT_BATCH_SIZE", help="pairs per step"),
    temperature: float = typer.Option(1 / 50, "--temperature", envvar="FREEBIND_TRAIN_TEMPERATURE",
                                      help="InfoNCE temperature"),
    hidden: int = typer.Option(2048, "--hidden", envvar="FREEBIND_TRAIN_HIDDEN", help="projector hidden width"),
    seed: int = typer.Option(0, "--seed", envvar="FREEBIND_TRAIN_SEED", help="seed of the init and the shuffles"),
    mode: list[str] = typer.Option([], "--mode", envvar="FREEBIND_TRAIN_FIT_MODE",
                                   help="heads to train (default: every mode)"),
    input_noise: float = typer.Option(0.0, "--input-noise", envvar="FREEBIND_TRAIN_INPUT_NOISE",
                                      help="std of Gaussian noise added to each source vector in training (then "
                                           "re-normalised): a smoother map for inputs unlike the pairs; 0 off"),
    stop_after: int = typer.Option(None, "--stop-after", envvar="FREEBIND_TRAIN_STOP_AFTER",
                                   help="stop this run after N epochs (the next run resumes)"),
    method: str = typer.Option("infonce", "--method", envvar="FREEBIND_TRAIN_FIT_METHOD",
                               help="infonce (FreeBind's trained heads) or procrustes (each head the orthogonal map "
                                    "of its mode's pairs, solved in closed form; needs --hidden >= 2 x the target's "
                                    "dimension)"),
    workdir: Path = WORKDIR, device: str = DEVICE, no_progress: bool = NO_PROGRESS,
) -> None:
    """Train one projector head per data mode with symmetric InfoNCE (resumes from the newest epoch), or solve
    each as an orthogonal map (`--method procrustes`)."""
    from training.fit import FitConfig, fit

    if kind not in ("displacement", "combination"):
        fail(f"--kind must be displacement or combination, got {kind!r}")
    config = FitConfig(kind, epochs, lr, batch_size, temperature, hidden, seed, list(mode), input_noise, method)
    try:
        fit(workdir, config, progress=not no_progress, stop_after=stop_after, device=device or "cpu")
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    report = json.loads((workdir / "fit" / "fit.json").read_text())
    typer.echo(json.dumps({k: report.get(k) for k in ("epochs_done", "finished", "samples_per_second_this_run")}))


@app.command("eval")
def eval_command(
    tasks: Path = typer.Option(..., "--tasks", envvar="FREEBIND_TRAIN_TASKS",
                               help="YAML/JSON file of retrieval/zeroshot tasks"),
    checkpoint: Path = typer.Option(None, "--checkpoint", envvar="FREEBIND_TRAIN_CHECKPOINT",
                                    help="evaluate an exported bond folder instead of the work folder's fit"),
    factor: list[float] = typer.Option([], "--factor", envvar="FREEBIND_TRAIN_FACTOR",
                                       help="factors to sweep (default 0, 0.1, ..., 1)"),
    report: Path = typer.Option(None, "--report", envvar="FREEBIND_TRAIN_REPORT",
                                help="JSON report path (default workdir/eval)"),
    plot: Path = typer.Option(None, "--plot", envvar="FREEBIND_TRAIN_PLOT",
                              help="PNG plot path (default workdir/eval)"),
    batch_size: int = typer.Option(64, "--batch-size", envvar="FREEBIND_TRAIN_BATCH_SIZE",
                                   help="items per encoder call"),
    space: Path = typer.Option(None, "--space", envvar="FREEBIND_TRAIN_SPACE",
                               help="score the bonded side as this space description serves the bond (all its "
                                    "bonds in order, the others at its default preset)"),
    workdir: Path = WORKDIR, device: str = DEVICE, no_progress: bool = NO_PROGRESS,
) -> None:
    """R@1/5/10 both ways and zero-shot top-1 for source, target and bonded space over a factor sweep."""
    from training import evaluate as ev
    from training.export import load_bond
    from training.space_side import load_side

    try:
        source, target, kind, projector = load_bond(workdir, checkpoint)
        through = load_side(space, projector, workdir, (source, target)) if space else None
        task_list = ev.load_tasks(tasks, workdir)
        result = ev.evaluate(workdir, task_list, projector, source=source, target=target, kind=kind,
                             factors=tuple(factor) or ev.DEFAULT_FACTORS, batch_size=batch_size, device=device,
                             progress=not no_progress, through=through)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc))
    groups = {t["group"] for t in result["tasks"].values()}
    if {"english", "multilingual"} <= groups:
        result["suggested_presets"] = ev.suggest_presets(result)
    report = report or workdir / "eval" / "report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2) + "\n")
    ev.plot(result, plot or workdir / "eval" / "plot.png")
    typer.echo(json.dumps({"report": str(report), "suggested_presets": result.get("suggested_presets")}))


@app.command("export")
def export_command(
    out: Path = typer.Option(..., "--out", envvar="FREEBIND_TRAIN_OUT", help="checkpoint folder to write"),
    dtype: str = typer.Option("float32", "--dtype", envvar="FREEBIND_TRAIN_EXPORT_DTYPE",
                              help="stored weights: float32, float16 or bfloat16"),
    source_id: str = typer.Option(None, "--source-id", envvar="FREEBIND_TRAIN_SOURCE_ID",
                                  help="source space id in the manifest"),
    target_id: str = typer.Option(None, "--target-id", envvar="FREEBIND_TRAIN_TARGET_ID",
                                  help="target space id in the manifest"),
    workdir: Path = WORKDIR,
) -> None:
    """Write the fitted projector as a bond checkpoint folder (weights + manifest with config and data)."""
    from training.export import export

    try:
        manifest = export(workdir, out, dtype=dtype, source_id=source_id, target_id=target_id)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(json.dumps({"out": str(out), "kind": manifest.kind, "sha256": manifest.weights_sha256}))


@app.command("prepare-wordnet")
def prepare_wordnet_command(
    out: Path = typer.Option(..., "--out", envvar="FREEBIND_TRAIN_WORDNET_OUT",
                             help="text file to write, one gloss a line"),
    source: Path = typer.Option(Path("/usr/share/wordnet/data.noun"), "--source",
                                envvar="FREEBIND_TRAIN_WORDNET_SOURCE",
                                help="WordNet data.noun (Debian wordnet-base)"),
) -> None:
    """Write WordNet noun glosses ("lemma, lemma: gloss") as a text pool."""
    from training.corpora import wordnet_glosses

    try:
        typer.echo(json.dumps({"out": str(out), "lines": wordnet_glosses(out, source)}))
    except FileNotFoundError as exc:
        fail(str(exc))


@app.command("prepare-speech")
def prepare_speech_command(
    pool: str = typer.Option(..., "--pool", envvar="FREEBIND_TRAIN_SPEECH_POOL",
                             help="text pool whose items are read aloud"),
    out: Path = typer.Option(..., "--out", envvar="FREEBIND_TRAIN_SPEECH_OUT",
                             help="folder for the WAV files and manifest.jsonl"),
    voice: str = typer.Option("en-us", "--voice", envvar="FREEBIND_TRAIN_SPEECH_VOICE", help="espeak-ng voice"),
    workers: int = typer.Option(2, "--workers", envvar="FREEBIND_TRAIN_SPEECH_WORKERS",
                                help="espeak-ng processes at once"),
    no_progress: bool = NO_PROGRESS,
) -> None:
    """Synthesise speech for a text pool with espeak-ng (an audio pool: manifest.jsonl with `audio`)."""
    from training.corpora import synthesize_speech
    from training.pools import list_pool, parse_pool

    try:
        texts = list_pool(parse_pool(pool)).sources
        manifest = synthesize_speech(texts, out, voice=voice, workers=workers, progress=not no_progress)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(json.dumps({"manifest": str(manifest), "clips": len(texts)}))
