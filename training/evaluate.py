"""Stage 4, eval: retrieval and zero-shot for the source, the target and the bonded space over a factor sweep.

Tasks come from a YAML/JSON file:

    retrieval:                     # query i matches gallery item i; R@1/5/10 in both directions
      - {name: m30k_de_en, group: multilingual, query: "de=text:...train.de.gz?start=28000",
         gallery: "en=text:...train.en.gz?start=28000"}
    zeroshot:                      # top-1: each item against one text embedding per class
      - {name: cifar_en, group: english, items: "cifar=image:.../manifest.jsonl?label=label&step=2",
         classes: {airplane: airplane, ...}, templates: ["a photo of a {c}."]}

Every pool (class prompts too, written to a text file) goes through the embed stage, so eval embeds
each item once per space and re-runs are cheap. The bonded space is then pure array math
(bonds.reference.combine / displace) on the cached leaves, one projection per item for the whole sweep.
Which space is "base" follows the bond: a combination's base is the target, a displacement's the source.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonds.reference import combine, displace, normalize
from training.conse import TOPK, conse_vectors
from training.embed import SpaceSpec, embed_pools, load_embeddings, read_space_info
from training.pools import PoolSpec, list_pool, parse_pool

log = logging.getLogger(__name__)

DEFAULT_FACTORS = tuple(round(0.1 * i, 1) for i in range(11))
RECALL_AT = (1, 5, 10)


@dataclass
class Task:
    name: str
    kind: str  # retrieval | zeroshot
    group: str
    pools: dict[str, PoolSpec]  # retrieval: query, gallery; zeroshot: items, prompts
    classes: list[str] | None = None  # zeroshot: labels in prompt-file order (one block of templates each)
    n_templates: int = 1


def retrieval_metrics(q_nd: np.ndarray, g_nd: np.ndarray) -> dict[str, float]:
    """R@k (percent) both ways; item i of the queries matches item i of the gallery."""
    if len(q_nd) != len(g_nd):
        raise ValueError(f"retrieval needs aligned sets, got {len(q_nd)} queries and {len(g_nd)} gallery items")
    out = {}
    sims = q_nd @ g_nd.T
    if not np.isfinite(sims).all():
        raise ValueError("retrieval scores hold NaN or inf: the query or gallery embeddings are not finite")
    for direction, s in (("q2g", sims), ("g2q", sims.T)):
        # how many other items score at least as high as the true match: a tie counts against it, so
        # collapsed (all-equal) embeddings score 0, not 100
        rank = (s >= np.diag(s)[:, None]).sum(axis=1) - 1
        for k in RECALL_AT:
            out[f"{direction}_R@{k}"] = round(100.0 * float((rank < k).mean()), 2)
    out["mean_R@1"] = round((out["q2g_R@1"] + out["g2q_R@1"]) / 2, 2)
    return out


def zeroshot_metrics(x_nd: np.ndarray, labels: list[str], class_nd: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Top-1 (percent): an item is right when its true class scores strictly above every other class
    (a tie counts against it); a label that is no class is wrong."""
    s = x_nd @ class_nd.T
    if not np.isfinite(s).all():
        raise ValueError("zero-shot scores hold NaN or inf: the item or class-prompt embeddings are not finite")
    column = {c: i for i, c in enumerate(classes)}
    right = np.zeros(len(labels), bool)
    for i, label in enumerate(labels):
        if label in column:
            right[i] = (s[i] >= s[i, column[label]]).sum() == 1
    return {"top1": round(100.0 * float(right.mean()), 2)}


def load_tasks(path: Path, workdir: Path) -> list[Task]:
    """Tasks of a YAML/JSON file; anything malformed is a ValueError naming the file and the task."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"{path}: not valid YAML/JSON{where}: {problem}") from None
    if not isinstance(raw, dict) or set(raw) - {"retrieval", "zeroshot"}:
        raise ValueError(f"{path}: expected a mapping with `retrieval` and/or `zeroshot` lists of tasks"
                         + (f", got keys {sorted(map(str, raw))}" if isinstance(raw, dict) else ""))
    tasks = []
    for spec in _task_list(raw, "retrieval", path):
        _require(spec, ("name", "query", "gallery"), "retrieval", path)
        query, gallery = parse_pool(spec["query"]), parse_pool(spec["gallery"])
        _check_line_aligned(str(spec["name"]), query, gallery, path)
        tasks.append(Task(str(spec["name"]), "retrieval", str(spec.get("group", "default")),
                          {"query": query, "gallery": gallery}))
    for spec in _task_list(raw, "zeroshot", path):
        _require(spec, ("name", "items", "classes"), "zeroshot", path)
        name = spec["name"]
        raw_classes = _read_json_ref(spec["classes"], path.parent)
        templates = _read_json_ref(spec.get("templates", ["{c}"]), path.parent)
        if not isinstance(raw_classes, dict) or not raw_classes:
            raise ValueError(f"{path}: zero-shot task {name!r}: classes must map each label of the items to a class "
                             f"name, like {{0: airplane, 1: car}}; got {type(raw_classes).__name__} "
                             f"{raw_classes!r}"[:300])
        if isinstance(templates, str) or not isinstance(templates, list) or not templates \
                or not all(isinstance(t, str) for t in templates):
            raise ValueError(f"{path}: zero-shot task {name!r}: templates must be a list of strings with {{c}} "
                             f"for the class name, got {templates!r}"[:300])
        # labels are read as strings (pools.py), so keys are too: `{0: red}` in YAML matches label 0
        classes = {str(label): str(text) for label, text in raw_classes.items()}
        if len(classes) != len(raw_classes):
            raise ValueError(f"{path}: zero-shot task {name!r}: two class keys are the same label ({sorted(classes)})")
        labels = list(classes)
        prompts = [t.replace("{c}", classes[label]) for label in labels for t in templates]
        prompt_pool = write_prompt_pool(workdir, prompts)
        tasks.append(Task(str(name), "zeroshot", str(spec.get("group", "default")),
                          {"items": parse_pool(spec["items"]), "prompts": prompt_pool}, labels, len(templates)))
    if not tasks:
        raise ValueError(f"{path}: no retrieval or zeroshot tasks")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: task names must be unique; repeated: {repeated}")
    eval_pools(tasks)
    return tasks


def write_prompt_pool(workdir: Path, prompts: list[str]) -> PoolSpec:
    """A text pool of prompts, one a line, written beside the (possibly shared, symlinked) embeddings folder
    and named by content: work folders that share embeddings share prompt pools too, and changed prompts
    are a new pool, never a stale one."""
    blob = "\n".join(prompts)
    prompt_dir = (Path(workdir) / "embeddings").resolve().parent / "prompts"
    prompt_file = prompt_dir / f"{hashlib.sha256(blob.encode()).hexdigest()[:12]}.txt"
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text(blob + "\n")
    return PoolSpec(f"prompts-{prompt_file.stem}", "text", str(prompt_file))


def _check_line_aligned(name: str, query: PoolSpec, gallery: PoolSpec, path: Path) -> None:
    """Retrieval pairs query i with gallery item i. Two text files (translations line by line) pair by line:
    blank lines are skipped, so blank lines in different places would shift every pair after them. The
    lines kept must step alike in both files (an offset between the two slices is fine)."""
    def line_numbers(spec: PoolSpec) -> list[int] | None:
        if spec.modality != "text" or spec.path.lower().endswith((".jsonl", ".jsonl.gz")):
            return None
        try:
            ids = list_pool(spec).ids
        except (OSError, ValueError):  # a missing file is reported when the pool is embedded
            return None
        return [int(i[len("line"):]) for i in ids]

    q, g = line_numbers(query), line_numbers(gallery)
    if q is None or g is None or len(q) != len(g) or not q:
        return
    shifted = next((i for i in range(len(q)) if q[i] - q[0] != g[i] - g[0]), None)
    if shifted is not None:
        raise ValueError(f"{path}: retrieval task {name!r}: query line {q[shifted]} would pair with gallery line "
                         f"{g[shifted]}: the two files' blank lines differ (blank lines are no items)")


def _task_list(raw: dict, key: str, path: Path) -> list[dict]:
    specs = raw.get(key) or []
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ValueError(f"{path}: `{key}` must be a list of tasks, each a mapping like {{name: ..., ...}}")
    return specs


def _require(spec: dict, keys: tuple[str, ...], kind: str, path: Path) -> None:
    missing = [k for k in keys if spec.get(k) in (None, "")]
    if missing:
        label = f"{kind} task {spec['name']!r}" if spec.get("name") else f"a {kind} task"
        raise ValueError(f"{path}: {label} has no {', '.join(missing)} (each needs {', '.join(keys)})")


def eval_pools(tasks: list[Task]) -> list[PoolSpec]:
    """Every pool the tasks use, once; one name used for two different pools is a ValueError."""
    pools: dict[str, tuple[PoolSpec, str]] = {}
    for task in tasks:
        for pool in task.pools.values():
            if pool.name in pools and pools[pool.name][0] != pool:
                other, where = pools[pool.name]
                raise ValueError(f"pool name {pool.name!r} means {other.to_string()!r} in task {where!r} but "
                                 f"{pool.to_string()!r} in task {task.name!r}; give different pools different names")
            pools.setdefault(pool.name, (pool, task.name))
    return [p for p, _ in pools.values()]


def _read_json_ref(value: Any, root: Path) -> Any:
    """A literal, or "file.json#key" (relative to the tasks file) for shared class-name/template files."""
    if not isinstance(value, str):
        return value
    file, _, key = value.partition("#")
    target = Path(file) if Path(file).is_absolute() else root / file
    try:
        data = json.loads(target.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{target}: not valid JSON ({exc})") from None
    if key and (not isinstance(data, dict) or key not in data):
        has = f"; it has {sorted(data)}" if isinstance(data, dict) else ""
        raise ValueError(f"{target} has no key {key!r}{has}")
    return data[key] if key else data


class Leaves:
    """A task's embeddings in each space and their projections, cached for the whole sweep."""

    def __init__(self, workdir: Path, source: str, target: str, projector, kind: str, through=None):
        """`through`: a training.space_side.SpaceSide, to score the bonded side as the space serving the bond."""
        self.workdir, self.source, self.target, self.projector, self.kind = workdir, source, target, projector, kind
        self.through = through
        self.info = {s: read_space_info(workdir, s) for s in (source, target)}
        self._conse: dict[tuple[str, str], np.ndarray] = {}

    def has(self, space: str, modality: str) -> bool:
        return modality in self.info[space]["modalities"]

    def vectors(self, space: str, pool: PoolSpec) -> np.ndarray:
        if pool.modality == "image" and not self.has(space, "image"):
            # only a served space asks for these (`through`): its description gives this space's encoder ConSE
            # images (training.space_side.Embedded), which the work folder's posteriors and names stand in for
            key = (space, pool.to_string())
            if key not in self._conse:
                self._conse[key] = conse_vectors(self.workdir, space, pool, topk=self.through.conse_topk(space) or TOPK)
            return self._conse[key]
        return load_embeddings(self.workdir, space, pool.name)[1]

    def side(self, which: str, pool: PoolSpec, f: float | None = None) -> np.ndarray | None:
        """`which` = source | target | bonded (at factor f); None where that space lacks the modality."""
        m = pool.modality
        if which in ("source", "target"):
            space = self.source if which == "source" else self.target
            return self.vectors(space, pool) if self.has(space, m) else None
        if self.through is not None:
            return self.through.vectors(m, lambda space: self.vectors(space, pool), f)
        has_s, has_t = self.has(self.source, m), self.has(self.target, m)
        projected = self.projector.project(self.vectors(self.source, pool), normalize=False) if has_s else None
        if self.kind == "combination":  # source = expert, target = base
            if has_t and has_s:
                return combine(self.vectors(self.target, pool), projected, f).astype(np.float32)
            return self.vectors(self.target, pool) if has_t else normalize(projected).astype(np.float32)
        if has_s and has_t:  # displacement: source = base, target = expert
            return displace(projected, self.vectors(self.target, pool), f).astype(np.float32)
        return normalize(projected).astype(np.float32) if has_s else self.vectors(self.target, pool)


def score(task: Task, leaves: Leaves, which: str, f: float | None = None) -> dict[str, float] | None:
    where = which if f is None else f"{which} at factor {f}"
    if task.kind == "retrieval":
        q, g = leaves.side(which, task.pools["query"], f), leaves.side(which, task.pools["gallery"], f)
        if q is None or g is None:
            return None
        try:
            return retrieval_metrics(q, g)
        except ValueError as exc:
            raise ValueError(f"task {task.name!r} ({where}): {exc}") from None
    x, prompts = leaves.side(which, task.pools["items"], f), leaves.side(which, task.pools["prompts"], f)
    if x is None or prompts is None:
        return None
    class_nd = normalize(prompts.reshape(len(task.classes), task.n_templates, -1).mean(axis=1)).astype(np.float32)
    labels = list_pool(task.pools["items"]).labels
    if labels is None:
        raise ValueError(f"zero-shot task {task.name!r}: its items pool has no label field (add ?label=...)")
    if not set(labels) & set(task.classes):
        raise ValueError(f"zero-shot task {task.name!r}: no label of its items is a class key (labels look like "
                         f"{sorted(set(labels))[:3]}, keys like {task.classes[:3]}); key the classes by the labels")
    try:
        return zeroshot_metrics(x, labels, class_nd, task.classes)
    except ValueError as exc:
        raise ValueError(f"task {task.name!r} ({where}): {exc}") from None


def headline(metrics: dict[str, float] | None) -> float | None:
    if metrics is None:
        return None
    return metrics["mean_R@1"] if "mean_R@1" in metrics else metrics["top1"]


def evaluate(workdir: Path, tasks: list[Task], projector, *, source: str, target: str, kind: str,
             factors=DEFAULT_FACTORS, batch_size: int = 64, device: str | None = None, progress: bool = True,
             through=None) -> dict:
    """Embed what is missing, score every task in every space and at every factor; returns the report.
    `through` (a SpaceSide) scores the bonded side as the space that serves the bond."""
    workdir = Path(workdir)
    pools = eval_pools(tasks)
    for space in (source, target):
        spec = SpaceSpec(**read_space_info(workdir, space)["spec"])
        embed_pools(workdir, spec, pools, batch_size=batch_size, device=device, progress=progress)
    leaves = Leaves(workdir, source, target, projector, kind, through)
    report: dict[str, Any] = {"kind": kind, "source": source, "target": target,
                              "base": target if kind == "combination" else source,
                              "expert": source if kind == "combination" else target,
                              "factors": list(factors), "tasks": {}}
    if through is not None:
        report["space"] = through.summary()
    for task in tasks:
        entry = {"kind": task.kind, "group": task.group, "pools": {k: p.to_string() for k, p in task.pools.items()},
                 "source": score(task, leaves, "source"), "target": score(task, leaves, "target"),
                 "bonded": {str(f): score(task, leaves, "bonded", f) for f in factors}}
        report["tasks"][task.name] = entry
        line = " ".join(f"{f}:{headline(m):.1f}" for f, m in entry["bonded"].items())
        log.info("%s: source %s, target %s; bonded %s", task.name, headline(entry["source"]),
                 headline(entry["target"]), line)
    return report


def suggest_presets(report: dict, keep_group: str = "english", gain_group: str = "multilingual",
                    max_drop: float = 2.0) -> dict[str, float]:
    """`multilingual`: the factor best on average over the gain group's tasks. `english`: the factor best
    on the gain group among those where no keep-group task drops more than `max_drop` points below the
    smallest factor measured (f = 0, the unbonded space, unless --factor left it out), in whatever order
    the factors were given."""
    factors = [str(f) for f in report["factors"]]
    lowest = min(factors, key=float)

    def mean_over(group: str, f: str) -> float:
        values = [headline(t["bonded"][f]) for t in report["tasks"].values() if t["group"] == group]
        return float(np.mean(values)) if values else 0.0

    def safe(f: str) -> bool:
        return all(headline(t["bonded"][f]) >= headline(t["bonded"][lowest]) - max_drop
                   for t in report["tasks"].values() if t["group"] == keep_group)

    best = max(factors, key=lambda f: (mean_over(gain_group, f), -float(f)))
    allowed = [f for f in factors if safe(f)] or [lowest]
    english = max(allowed, key=lambda f: (mean_over(gain_group, f), -float(f)))
    return {keep_group: float(english), gain_group: float(best)}


def plot(report: dict, path: Path) -> None:
    """One line per task: its headline metric against the factor, dashed lines for the unbonded spaces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    factors = report["factors"]
    for i, (name, task) in enumerate(report["tasks"].items()):
        colour = f"C{i % 10}"
        ax.plot(factors, [headline(task["bonded"][str(f)]) for f in factors], marker="o", color=colour, label=name)
        base = headline(task["target" if report["kind"] == "combination" else "source"])
        expert = headline(task["source" if report["kind"] == "combination" else "target"])
        if base is not None:
            ax.axhline(base, color=colour, linestyle=":", linewidth=1)
        if expert is not None:
            ax.axhline(expert, color=colour, linestyle="--", linewidth=1)
    ax.set_xlabel("factor f (weight of the projected term)")
    ax.set_ylabel("R@1 (mean of both directions) / zero-shot top-1, %")
    served = f" in {report['space']['name']}" if "space" in report else ""
    ax.set_title(f"{report['kind']} {report['source']} -> {report['target']}{served} (dotted: base, dashed: expert)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
