"""The 1,000-class evaluation: ImageNet-1k zero-shot in five languages, always beside ConSE built in e5.

A starter photo is ConSE: `n(sum_k w_k M_en[c_k])` over the classifier's top-10 classes, `M_en` the
English class names embedded as text. Zero-shot top-1 on a photo is then decided by the classifier
(which classes it sees) and by the text side (does the class name in a language land nearest the right
mixture among 1,000 names). Nothing but the second depends on the bond, and it is what this measures,
on two item sets:

- `names`: one "sure photo" per class (the classifier gives it all its weight: the image vector is class
  c's own prototype), classified among the 1,000 names of each language. It is the held-out check
  (one photo per class, 1,000 names) with the classifier made perfect, so every class counts once.
- `photos`: held-out shared photos (CIFAR-10's evaluation third, the GCompris farm photos) through their
  real posteriors, a hit when the top class is one of the ImageNet classes their label maps to
  (`training/recipes/imagenet1k_photo_classes.json`: CIFAR "dog" -> the 118 dog breeds; "deer" has no
  ImageNet class and is left out). Real mixtures, few classes.

Each is scored in three spaces: the reference (ConSE built directly in e5: photos as e5 mixtures of
the English names, names in e5; what binding e5 could reach), the base space alone, and the bonded
space at every factor. The bonded space embeds photos as the space serving the bond does: a
combination (base = starter) keeps the starter photo, a displacement projects it into e5 (`n(P(x))`).
With `through` (a training.space_side.SpaceSide, `--space FILE`) the bonded space is the whole served
space, every bond of its description in order, and the factor is the evaluated bond's. A tie with the
right class counts against it (duplicate names, such as the two "missile" classes, never score). The recipe
file names the languages' name files and the photo sets.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonds.vectors import l2_normalize
from training.conse import ViewConfig, classify_pool, conse, load_posteriors, one_hot, top_of
from training.embed import SpaceSpec, embed_pools, load_embeddings, read_space_info
from training.evaluate import DEFAULT_FACTORS, Leaves, write_prompt_pool
from training.pools import PoolSpec, list_pool, parse_pool

log = logging.getLogger(__name__)

SPACES = ("reference", "base")


@dataclass
class PhotoSet:
    pool: PoolSpec
    allowed: dict[str, list[int]]  # label -> the ImageNet classes that count as right


@dataclass
class Suite:
    languages: dict[str, PoolSpec]  # language -> its 1,000 names as a text pool (line i = class i)
    bank: PoolSpec  # the English names the classifier's prototypes are (the starter's own list)
    photos: list[PhotoSet]

    def pools(self) -> list[PoolSpec]:
        return list({p.name: p for p in [self.bank, *self.languages.values()]}.values())


def top1(image_nd: np.ndarray, names_cd: np.ndarray, allowed: list[set[int]]) -> float:
    """Percent of rows whose best-scoring name (strictly: a tie counts against it) is an allowed class."""
    s = image_nd @ names_cd.T
    if not np.isfinite(s).all():
        raise ValueError("1,000-class scores hold NaN or inf: the image or name embeddings are not finite")
    best = s.argmax(axis=1)
    unique = (s >= s[np.arange(len(s)), best][:, None]).sum(axis=1) == 1
    hits = [u and int(b) in ok for u, b, ok in zip(unique, best, allowed, strict=True)]
    return round(100.0 * float(np.mean(hits)), 2)


def load_suite(path: Path, workdir: Path) -> Suite:
    """The recipe file: `languages: {en: names.json#key}`, `photos: [{pool, classes: file.json#key}]`."""
    import yaml

    from bonds.encoders.conse import imagenet_classnames
    from training.evaluate import _read_json_ref

    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("languages"), dict) or "en" not in raw["languages"]:
        raise ValueError(f"{path}: expected `languages:` mapping each language (en among them) to its names "
                         "(file.json#key)")
    languages = {}
    for lang, ref in raw["languages"].items():
        names = _read_json_ref(ref, Path.cwd())  # like pools: relative to the working directory
        if not isinstance(names, list) or len(names) != 1000:
            raise ValueError(f"{path}: the {lang} names must be a list of 1,000, got {type(names).__name__} "
                             f"of {len(names) if isinstance(names, list) else '?'}")
        languages[str(lang)] = write_prompt_pool(workdir, [str(n).strip() for n in names])
    photos = []
    for spec in raw.get("photos") or []:
        allowed = _read_json_ref(spec["classes"], path.parent)
        pool = parse_pool(spec["pool"])
        if pool.modality != "image" or not pool.label:
            raise ValueError(f"{path}: photo pool {spec['pool']!r} must be an image pool with a label field")
        photos.append(PhotoSet(pool, {str(k): [int(i) for i in v] for k, v in allowed.items()}))
    return Suite(languages, write_prompt_pool(workdir, imagenet_classnames()), photos)


class Sides:
    """Image and name vectors of the suite in the reference, the base and the bonded space."""

    def __init__(self, workdir: Path, suite: Suite, leaves: Leaves):
        self.suite, self.leaves, self.workdir = suite, leaves, workdir
        base = leaves.target if leaves.kind == "combination" else leaves.source
        expert = leaves.source if leaves.kind == "combination" else leaves.target
        self.spaces = {"base": base, "reference": expert}
        self.banks = {s: load_embeddings(workdir, space, suite.bank.name)[1] for s, space in self.spaces.items()}
        self.weights = {"names": one_hot(len(self.banks["base"]))}
        self.allowed = {"names": [{c} for c in range(len(self.banks["base"]))]}
        for photo in suite.photos:
            _, idx, w = load_posteriors(workdir, photo.pool.name)
            labels = list_pool(photo.pool).labels
            keep = [i for i, label in enumerate(labels) if photo.allowed.get(label)]
            self.weights[photo.pool.name] = (idx[keep], w[keep])
            self.allowed[photo.pool.name] = [set(photo.allowed[labels[i]]) for i in keep]

    def images(self, which: str, part: str) -> np.ndarray:
        idx, w = self.weights[part]
        if which in SPACES:
            return conse(idx, w, self.banks[which])
        through = self.leaves.through
        if through is not None:  # the serving space's photos, as its default preset embeds them, each encoder
            # mixing its own `topk` classes (an expert with ConSE images, e5's `conse_images`, as the reference
            # does); a sure photo (`names`) is one class under any topk
            photos = {}
            for side, space in self.spaces.items():
                k = idx.shape[1] if part == "names" else through.conse_topk(space) or idx.shape[1]
                photos[space] = conse(*top_of(idx, w, k), self.banks[side])
            return through.vectors("image", photos.__getitem__)
        base = conse(idx, w, self.banks["base"])
        if self.leaves.kind == "combination":
            return base  # the base space keeps its photos
        return l2_normalize(self.leaves.projector.project(base, normalize=False))

    def names(self, which: str, lang: str, f: float | None = None) -> np.ndarray:
        pool = self.suite.languages[lang]
        if which in SPACES:
            return load_embeddings(self.workdir, self.spaces[which], pool.name)[1]
        return self.leaves.side("bonded", pool, f)


def evaluate_1k(workdir: Path, suite: Suite, projector, *, source: str, target: str, kind: str,
                factors=DEFAULT_FACTORS, device: str | None = None, progress: bool = True,
                specs: dict[str, SpaceSpec] | None = None, through=None) -> dict[str, Any]:
    """Embed and classify what is missing, then score every part and language in every space. `specs`
    build a space the work folder has not embedded in yet (a checkpoint's manifest names them); `through`
    (a training.space_side.SpaceSide) scores the bonded side as the space that serves the bond."""
    workdir = Path(workdir)
    for space in (source, target):
        try:
            spec = SpaceSpec(**read_space_info(workdir, space)["spec"])
        except FileNotFoundError:
            if space not in (specs or {}):
                raise
            spec = specs[space]
        embed_pools(workdir, spec, suite.pools(), device=device, progress=progress)
    for photo in suite.photos:
        classify_pool(workdir, photo.pool, ViewConfig(), device=device or "cpu", progress=progress)
    sides = Sides(workdir, suite, Leaves(workdir, source, target, projector, kind, through))
    parts = ["names"] + [p.pool.name for p in suite.photos]
    report: dict[str, Any] = {"kind": kind, "source": source, "target": target, "base": sides.spaces["base"],
                              "expert": sides.spaces["reference"], "factors": list(factors),
                              "languages": list(suite.languages), "parts": {}}
    if through is not None:
        report["space"] = through.summary()
    for part in parts:
        images = {which: sides.images(which, part) for which in SPACES}
        bonded_images = sides.images("bonded", part)
        entry: dict[str, Any] = {"items": len(images["base"])}
        for which in SPACES:
            entry[which] = {lang: top1(images[which], sides.names(which, lang), sides.allowed[part])
                            for lang in suite.languages}
        entry["bonded"] = {str(f): {lang: top1(bonded_images, sides.names("bonded", lang, f), sides.allowed[part])
                                    for lang in suite.languages} for f in factors}
        report["parts"][part] = entry
    return report


def table(report: dict[str, Any], presets: dict[str, float] | None = None) -> str:
    """The report as text: per part, the reference, the base alone and the bonded space at each preset
    (or every factor), with the bonded space's share of the reference."""
    langs = report["languages"]
    rows = presets or {f"f={f}": float(f) for f in report["factors"]}
    lines = [f"{report['kind']} {report['source']} -> {report['target']}: zero-shot top-1 among the 1,000 ImageNet "
             "class names of each language.",
             "'names': one photo per class that the classifier is sure of (the text side alone; the held-out photo "
             "check is ~0.82x it);",
             "other parts: held-out photos through their real posteriors. Reference: ConSE built in "
             f"{report['expert']}, the most a bond into it could give."]
    if "space" in report:
        served = report["space"]
        lines.append(f"Bonded: space {served['name']} (bonds in order: {', '.join(served['bonds'])}); f is "
                     f"{served['swept']}'s factor, the others as its default preset has them.")
    for part, entry in report["parts"].items():
        lines.append(f"{part} ({entry['items']} items), top-1 %: " + " ".join(f"{lang:>6}" for lang in langs))
        lines.append(f"  {'reference: ConSE in ' + report['expert']:<34}" + _cells(entry["reference"], langs))
        lines.append(f"  {report['base'] + ' alone':<34}" + _cells(entry["base"], langs))
        for name, f in rows.items():
            bonded = entry["bonded"][str(f)]
            share = {lang: 100 * bonded[lang] / entry["reference"][lang] if entry["reference"][lang] else 0.0
                     for lang in langs}
            lines.append(f"  {name + ' (f=' + str(f) + ')':<34}" + _cells(bonded, langs))
            lines.append(f"  {'  % of reference':<34}" + _cells(share, langs))
    return "\n".join(lines)


def _cells(values: dict[str, float], langs: list[str]) -> str:
    return " ".join(f"{values[lang]:6.1f}" for lang in langs)


def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per part: each language's top-1 against the factor, dashed at its reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = report["parts"]
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4.2), squeeze=False)
    factors = report["factors"]
    for ax, (part, entry) in zip(axes[0], parts.items(), strict=True):
        for i, lang in enumerate(report["languages"]):
            colour = f"C{i}"
            ax.plot(factors, [entry["bonded"][str(f)][lang] for f in factors], "o-", ms=3, color=colour, label=lang)
            ax.axhline(entry["reference"][lang], color=colour, ls="--", lw=1)
        ax.set_title(f"{part} ({entry['items']} items)", fontsize=10)
        ax.set_xlabel("factor f (weight of the projected term)")
        ax.set_ylabel("top-1 among 1,000 names, %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    served = f" in {report['space']['name']}" if "space" in report else ""
    fig.suptitle(f"{report['kind']} {report['source']} -> {report['target']}{served}: 1,000 classes "
                 f"(dashed: ConSE in {report['expert']})", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict[str, Any], path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
