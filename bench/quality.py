"""Part 6: quality of the shipped bonds, from their eval reports (docs/eval/*.json); nothing is retrained.

Each report holds, per task, the base space alone, the expert alone and the bonded space at every factor of the sweep.
Retrieval tasks are summarised by mean R@1 (query->gallery and back), zero-shot tasks by top-1 accuracy. The bonded
figure is taken at the default preset of the shipped space that serves the bond (bonds/spaces/*.yaml), and the best
factor of the sweep is shown beside it, so a reader sees both what ships and what the sweep found.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from bench.common import REPO, pyplot, save_plot

EVAL = REPO / "docs" / "eval"
REPORTS = {"e5_into_starter": "starter_e5", "starter_into_e5": "starter_in_e5"}  # bond -> space serving it
SPACES = REPO / "bonds" / "spaces"


def shipped_presets(space: str, bond: str) -> tuple[dict[str, float], str]:
    """The space's presets as {name: text factor of `bond`, the one its report sweeps}, and its default preset's
    name (a space of two bonds, starter_in_e5, keeps the other at its default in every preset)."""
    description = yaml.safe_load((SPACES / f"{space}.yaml").read_text())
    presets = {name: factors[bond]["text"] for name, factors in description["presets"].items()}
    return presets, description["default_preset"]


def metric(task: dict[str, Any]) -> str:
    return "mean_R@1" if task["kind"] == "retrieval" else "top1"


def sides(report: dict[str, Any], task: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """(base, expert) figures: `source`/`target` are the bond's direction, base/expert the spaces' roles."""
    if report["source"] == report["base"]:
        return task["source"], task["target"]
    return task["target"], task["source"]


def table(name: str) -> dict[str, Any]:
    report = json.loads((EVAL / f"{name}.json").read_text())
    presets, default = shipped_presets(REPORTS[name], report["space"]["swept"])
    preset = presets[default]
    rows = []
    for task_name, task in report["tasks"].items():
        key = metric(task)
        base, expert = sides(report, task)
        sweep = {float(f): scores[key] for f, scores in task["bonded"].items()}
        best = max(sweep, key=sweep.get)
        rows.append({"task": task_name, "group": task["group"], "metric": key,
                     "base": base[key] if base else None, "expert": expert[key] if expert else None,
                     "bonded_at_preset": sweep.get(preset), "best_factor": best, "bonded_best": sweep[best],
                     "sweep": sweep})
    return {"kind": report["kind"], "base": report["base"], "expert": report["expert"], "preset_factor": preset,
            "presets": presets, "default_preset": default,
            "space": REPORTS[name], "rows": rows, "eval_plot": f"eval/{name}.png"}


def plot(tables: dict[str, dict]) -> str:
    """Mean of each task group against the factor, one panel per bond: the sweep at a glance."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.6), squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items(), strict=True):
        for group in sorted({r["group"] for r in t["rows"]}):
            rows = [r for r in t["rows"] if r["group"] == group]
            factors = sorted(rows[0]["sweep"])
            ax.plot(factors, [sum(r["sweep"][f] for r in rows) / len(rows) for f in factors], "o-", ms=3,
                    label=f"{group} ({len(rows)} tasks)")
        ax.axvline(t["preset_factor"], color="grey", ls=":", label=f"preset f={t['preset_factor']}")
        ax.set_title(f"{name} ({t['kind']})", fontsize=10)
        ax.set_xlabel("factor f")
        ax.set_ylabel("mean score (R@1 / top-1, %)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_plot(fig, "quality")


def run() -> dict[str, Any]:
    tables = {name: table(name) for name in REPORTS}
    return {"bonds": tables, "plot": plot(tables)}
