"""Part 1: text embedding over HTTP, `freebind serve` (MiniLM alone) against infinity on the same MiniLM.

Both servers get the same OpenAI-shaped bodies (`{"model": "minilm", "input": [...]}`, real Multi30k
captions) from one load generator, one server at a time, at concurrency 1, 8, 32 and 64 with 1 and 32
texts per request. Before timing, the two servers' vectors for the same texts are compared: they must
be the same model's output (cosine ~1), or the comparison means nothing.

The whole matrix runs in `ROUNDS` rounds, freebind then infinity in each, so that both servers see
the shared machine's slow and quiet minutes alike: a cell's figures are the median over rounds, and
the target's ratio is the median of the rounds' own ratios (each a pair measured minutes apart), with
every round's ratio kept beside it. One round of one server read anywhere from 164 to 200 texts/s for
the same cell on this machine, enough to swing a single-run verdict either way.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np

from bench import load as loadgen
from bench.common import SPACES, captions, log, pyplot, quick, save_plot
from bench.servers import freebind, infinity

CONCURRENCY = (1, 8, 32, 64)
SIZES = (1, 32)
TARGET_SPEEDUP, TARGET_CONCURRENCY = 1.5, 32
ROUNDS = 3


def bodies(texts: list[str], size: int) -> list[bytes]:
    groups = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
    return [json.dumps({"model": "minilm", "input": group}).encode() for group in groups]


def request_count(size: int, concurrency: int) -> int:
    """Enough requests for a steady state at every concurrency, a bounded count all the same."""
    if quick():
        return 2 * concurrency
    return max(200, 10 * concurrency) if size == 1 else max(24, 2 * concurrency)


def matrix(url: str, texts: list[str], concurrency=CONCURRENCY, sizes=SIZES) -> list[dict[str, Any]]:
    cells = []
    for size in sizes:
        payloads = bodies(texts, size)
        for c in concurrency:
            cell = loadgen.run(url, payloads, size, c, request_count(size, c))
            log.info("  %d text(s)/request, concurrency %2d: %7.1f items/s  p50 %7.1f ms  p99 %7.1f ms  errors %s",
                     size, c, cell["items_per_s"], cell["p50_ms"], cell["p99_ms"], cell["errors"] or "-")
            cells.append(cell)
    return cells


def vectors(url: str, texts: list[str]) -> np.ndarray:
    answer = httpx.post(url, json={"model": "minilm", "input": texts}, timeout=60).raise_for_status().json()
    return np.array([row["embedding"] for row in sorted(answer["data"], key=lambda r: r["index"])], dtype=np.float32)


def find(cells: list[dict], size: int, concurrency: int) -> dict:
    return next(c for c in cells if c["items_per_request"] == size and c["concurrency"] == concurrency)


def median_cells(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One cell per (size, concurrency): the rounds' median figures, their errors summed, each round's texts/s kept."""
    out = []
    for cells in zip(*rounds, strict=True):
        merged = dict(cells[0])
        for key in ("items_per_s", "requests_per_s", "p50_ms", "p99_ms", "mean_ms", "seconds"):
            if all(key in c for c in cells):
                merged[key] = round(float(np.median([c[key] for c in cells])), 1)
        errors: dict[str, int] = {}
        for c in cells:
            for kind, count in c["errors"].items():
                errors[kind] = errors.get(kind, 0) + count
        merged["errors"], merged["items_per_s_rounds"] = errors, [c["items_per_s"] for c in cells]
        out.append(merged)
    return out


def verdict(ours: list[list[dict]], theirs: list[list[dict]]) -> dict[str, Any]:
    """Per request size: the median over rounds of freebind's texts/s over infinity's at the target
    concurrency (and of the p99 ratio), each round's ratio listed; met if the medians meet the target."""
    out = {}
    for size in SIZES:
        pairs = [(find(a, size, TARGET_CONCURRENCY), find(b, size, TARGET_CONCURRENCY))
                 for a, b in zip(ours, theirs, strict=True)]
        speedups = [a["items_per_s"] / max(b["items_per_s"], 1e-9) for a, b in pairs]
        p99_ratios = [a["p99_ms"] / max(b["p99_ms"], 1e-9) for a, b in pairs]
        speedup, p99_ratio = float(np.median(speedups)), float(np.median(p99_ratios))
        out[f"{size}_text"] = {"speedup": round(speedup, 2), "p99_ratio": round(p99_ratio, 2),
                               "speedup_rounds": [round(x, 2) for x in speedups],
                               "p99_ratio_rounds": [round(x, 2) for x in p99_ratios],
                               "met": bool(speedup >= TARGET_SPEEDUP and p99_ratio <= 1.0)}
    return out


def plot(results: dict[str, list[dict]]) -> str:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for server, cells in results.items():
        for size, style in zip(SIZES, ("o-", "s--"), strict=True):
            row = [c for c in cells if c["items_per_request"] == size]
            label = f"{server}, {size} text{'s' if size > 1 else ''}/request"
            left.plot([c["concurrency"] for c in row], [c["items_per_s"] for c in row], style, label=label)
            right.plot([c["concurrency"] for c in row], [c["p99_ms"] for c in row], style, label=label)
    for ax, title, unit in ((left, "throughput", "texts/s"), (right, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(f"MiniLM over HTTP: {title}")
        ax.grid(alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    return save_plot(fig, "text")


def run() -> dict[str, Any]:
    texts = captions("en", 0, 200 if quick() else 4096)
    probe = texts[:16]
    rounds: dict[str, list[list[dict]]] = {"freebind": [], "infinity": []}
    for number in range(1, (1 if quick() else ROUNDS) + 1):
        with freebind(SPACES / "minilm.yaml", "minilm") as (base, _):
            ours = vectors(f"{base}/v1/embeddings", probe)
            log.info("round %d, freebind serve (MiniLM alone):", number)
            rounds["freebind"].append(matrix(f"{base}/v1/embeddings", texts))
        with infinity() as (base, _):
            theirs = vectors(f"{base}/embeddings", probe)
            log.info("round %d, infinity (torch engine, CPU):", number)
            rounds["infinity"].append(matrix(f"{base}/embeddings", texts))
    cosine = float(
        np.min(np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)))
    results = {server: median_cells(server_rounds) for server, server_rounds in rounds.items()}
    return {"same_model_min_cosine": round(cosine, 6), "rounds": len(rounds["freebind"]), "results": results,
            "target": {"speedup": TARGET_SPEEDUP, "concurrency": TARGET_CONCURRENCY,
                       "by_size": verdict(rounds["freebind"], rounds["infinity"])},
            "plot": plot(results)}
