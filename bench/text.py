"""Part 1: text embedding over HTTP, `freebind serve` (MiniLM alone) against infinity on the same MiniLM.

Both servers get the same OpenAI-shaped bodies (`{"model": "minilm", "input": [...]}`, real Multi30k
captions) from one load generator, one server at a time, at concurrency 1, 8, 32 and 64 with 1 and 32
texts per request. Before timing, the two servers' vectors for the same texts are compared: they must
be the same model's output (cosine ~1), or the comparison means nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np

from bench import load as loadgen
from bench.common import SPACES, captions, log, pyplot, quick, save_plot
from bench.servers import freebind, infinity

CONCURRENCY = (1, 8, 32, 64)
SIZES = (1, 32)
TARGET_SPEEDUP, TARGET_CONCURRENCY = 1.5, 32


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


def verdict(ours: list[dict], theirs: list[dict]) -> dict[str, Any]:
    out = {}
    for size in SIZES:
        a, b = find(ours, size, TARGET_CONCURRENCY), find(theirs, size, TARGET_CONCURRENCY)
        speedup = a["items_per_s"] / max(b["items_per_s"], 1e-9)
        out[f"{size}_text"] = {"speedup": round(speedup, 2), "p99_ratio": round(a["p99_ms"] / max(b["p99_ms"], 1e-9), 2),
                               "met": bool(speedup >= TARGET_SPEEDUP and a["p99_ms"] <= b["p99_ms"])}
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
    results: dict[str, list[dict]] = {}
    with freebind(SPACES / "minilm.yaml", "minilm") as (base, _):
        ours = vectors(f"{base}/v1/embeddings", probe)
        log.info("freebind serve (MiniLM alone):")
        started = time.perf_counter()
        results["freebind"] = matrix(f"{base}/v1/embeddings", texts)
        log.info("  %.0f s", time.perf_counter() - started)
    with infinity() as (base, _):
        theirs = vectors(f"{base}/embeddings", probe)
        log.info("infinity (torch engine, CPU):")
        results["infinity"] = matrix(f"{base}/embeddings", texts)
    cosine = float(np.min(np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)))
    return {"same_model_min_cosine": round(cosine, 6), "results": results,
            "target": {"speedup": TARGET_SPEEDUP, "concurrency": TARGET_CONCURRENCY,
                       "by_size": verdict(results["freebind"], results["infinity"])},
            "plot": plot(results)}
