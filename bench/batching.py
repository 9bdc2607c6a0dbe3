"""Part 3: dynamic batching off and on, under the same load.

The same server and the same requests twice: once with `max_batch_size=1` (every item is its own model call: batching
off) and once with the encoder's default (batching on: MiniLM on ONNX 128 texts, EfficientNet 4 images on CPU;
`max_wait_ms` stays 0, so batches form only from items that arrive while the model is busy). Two loads where batching
should matter: single-text requests to MiniLM and single-image requests to the starter encoder, both at concurrency 32.
Reported: items/s, p50 and p99 of each, and the on/off ratios.
"""

from __future__ import annotations

from typing import Any

from bench import load as loadgen
from bench import media, text
from bench.common import SPACES, captions, log, pyplot, quick, save_plot
from bench.servers import freebind

CONCURRENCY = 32


def loads() -> dict[str, dict[str, Any]]:
    images = media.image_files()[: 16 if quick() else None]
    return {
        "text": {"space": "minilm.yaml", "url": "/v1/embeddings", "requests": 64 if quick() else 960,
                 "bodies": text.bodies(captions("en", 0, 200 if quick() else 2048), 1)},
        "image": {"space": "starter.yaml", "url": "/embed", "requests": 64 if quick() else 192,
                  "bodies": media.bodies("image", images)},
    }


def plot(results: dict[str, dict]) -> str:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = list(results)
    width = 0.38
    for i, (mode, colour) in enumerate((("off", "tab:grey"), ("on", "tab:blue"))):
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        left.bar(xs, [results[n][mode]["items_per_s"] for n in names], width, color=colour, label=f"batching {mode}")
        right.bar(xs, [results[n][mode]["p99_ms"] for n in names], width, color=colour, label=f"batching {mode}")
    for ax, title in ((left, "items/s"), (right, "p99 latency (ms)")):
        ax.set_xticks(range(len(names)), [f"{n}, 1 item/request" for n in names])
        ax.set_title(f"{title} at concurrency {CONCURRENCY}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    return save_plot(fig, "batching")


def run() -> dict[str, Any]:
    results: dict[str, dict] = {}
    for name, job in loads().items():
        results[name] = {}
        for mode, settings in (("off", {"max_batch_size": "1"}), ("on", {})):
            with freebind(SPACES / job["space"], f"batching-{name}-{mode}", **settings) as (base, _):
                cell = loadgen.run(base + job["url"], job["bodies"], 1, CONCURRENCY, job["requests"])
            log.info("  %s, batching %-3s: %7.1f items/s  p50 %7.1f ms  p99 %7.1f ms  errors %s", name, mode,
                     cell["items_per_s"], cell["p50_ms"], cell["p99_ms"], cell["errors"] or "-")
            results[name][mode] = cell
        on, off = results[name]["on"], results[name]["off"]
        results[name]["ratio"] = {"items_per_s": round(on["items_per_s"] / max(off["items_per_s"], 1e-9), 2),
                                  "p99": round(on["p99_ms"] / max(off["p99_ms"], 1e-9), 2)}
    return {"concurrency": CONCURRENCY, "results": results, "plot": plot(results)}
