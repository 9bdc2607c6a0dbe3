"""Part 2: image and speech embedding: `freebind serve` against the bare encoder called in-process.

The bare figure is the starter encoder (EfficientNet-Lite0 + ConSE for images, Whisper tiny.en + MiniLM for
speech) called directly in batches of its own size and of 32, whichever is faster, decoding included (the
service decodes too), one step after another. The service gets the same files as base64 JSON, one item per
request, from the shared load generator at concurrency 1, 8 and 32, and batches them itself; as it decodes
and prepares the next items while the model runs, it can pass the bare figure. Inputs are real: the 80
COCO-mini photos and FSDD spoken digits. The target (the GPU-pipeline issue's CPU target) is a share of the
bare figure at 32 clients, per modality."""

from __future__ import annotations

import base64
import gc
import json
import time
from typing import Any

import numpy as np

from bench import load as loadgen
from bench.common import SPACES, log, pyplot, quick, save_plot, shared_data
from bench.servers import freebind
from bench.text import median_cells

CONCURRENCY = (1, 8, 32)
TARGET_SHARE, TARGET_CONCURRENCY = 0.9, 32
ROUNDS = 3
BATCH = 32  # besides the encoder's own size: the bare figure is the faster of the two


def image_files() -> list[bytes]:
    folder = shared_data() / "coco-mini" / "images"
    return [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]


def audio_files(count: int = 64) -> list[bytes]:
    """Spoken digits, spread over the three speakers and ten digits (the manifest is sorted by digit)."""
    folder = shared_data() / "fsdd-dev"
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    step = max(1, len(rows) // count)
    return [(folder / r["audio"]).read_bytes() for r in rows[::step][:count]]


def bodies(modality: str, files: list[bytes]) -> list[bytes]:
    """One item per request, as a client sends a file it has just received."""
    return [json.dumps({"inputs": [{modality: base64.b64encode(data).decode()}]}).encode() for data in files]


def bare(modality: str, files: list[bytes], items: int) -> dict[str, Any]:
    """Items/s of decode + encode in this process, after one warm-up batch, in batches of the encoder's
    own size and of `BATCH`: the faster, with both figures kept."""
    from bonds.encoders.starter import StarterEncoder
    from bonds.media import decode_audio, decode_image

    decode = decode_image if modality == "image" else decode_audio
    encoder = StarterEncoder()
    encoder.encode(modality, [decode(f) for f in files[:4]])  # first calls allocate; not timed
    work = [files[i % len(files)] for i in range(items)]
    tried: dict[int, float] = {}
    for size in sorted({encoder.batch_size(modality), BATCH}):
        started = time.perf_counter()
        for at in range(0, items, size):
            encoder.encode(modality, [decode(f) for f in work[at : at + size]], batch_size=size)
        tried[size] = round(items / (time.perf_counter() - started), 1)
    del encoder
    gc.collect()
    best = max(tried, key=tried.get)
    return {"items": items, "batch": best, "items_per_s": tried[best], "by_batch": tried}


def requests_for(modality: str, concurrency: int) -> int:
    if quick():
        return 2 * concurrency
    return max(48, 4 * concurrency) if modality == "image" else max(16, concurrency)


def served(url: str, modality: str, payloads: list[bytes], concurrency=CONCURRENCY) -> list[dict]:
    cells = []
    for c in concurrency:
        cell = loadgen.run(url, payloads, 1, c, requests_for(modality, c))
        log.info("  %s, concurrency %2d: %6.1f items/s  p50 %7.1f ms  p99 %7.1f ms  errors %s", modality, c,
                 cell["items_per_s"], cell["p50_ms"], cell["p99_ms"], cell["errors"] or "-")
        cells.append(cell)
    return cells


def plot(results: dict[str, dict]) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.8 * len(results), 3.6), squeeze=False)
    for ax, (modality, r) in zip(axes[0], results.items(), strict=True):
        ax.plot([c["concurrency"] for c in r["service"]], [c["items_per_s"] for c in r["service"]], "o-",
                label="freebind serve (HTTP, 1 item/request)")
        ax.axhline(r["bare"]["items_per_s"], color="k", ls="--", label=f"bare encoder, batches of {r['bare']['batch']}")
        ax.axhline(TARGET_SHARE * r["bare"]["items_per_s"], color="grey", ls=":", label=f"{TARGET_SHARE:.0%} of bare")
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("items/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"starter encoder: {modality}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_plot(fig, "media")


def run() -> dict[str, Any]:
    """`ROUNDS` rounds of bare then served, as in part 1: cells are medians over rounds, and the target's
    share is the median of the rounds' own shares (one round's image share read anywhere from 43% to 94%
    on this shared machine)."""
    inputs = {"image": image_files(), "audio": audio_files(16 if quick() else 48)}
    if quick():
        inputs["image"] = inputs["image"][:16]
    rounds: list[dict[str, dict]] = []
    for number in range(1, (1 if quick() else ROUNDS) + 1):
        results: dict[str, dict] = {}
        for modality, files in inputs.items():
            items = len(files) if quick() or modality == "audio" else 2 * len(files)
            results[modality] = {"files": len(files), "bare": bare(modality, files, items)}
            log.info("round %d, bare %s: %.1f items/s", number, modality, results[modality]["bare"]["items_per_s"])
        with freebind(SPACES / "starter.yaml", "starter") as (base, _):
            for modality, files in inputs.items():
                results[modality]["service"] = served(f"{base}/embed", modality, bodies(modality, files))
        rounds.append(results)
    merged = {modality: merge([r[modality] for r in rounds]) for modality in inputs}
    return {"results": merged, "rounds": len(rounds),
            "target": {"share": TARGET_SHARE, "concurrency": TARGET_CONCURRENCY},
            "plot": plot(merged)}


def merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One modality's rounds: median bare and served figures, and the median of the rounds' shares."""
    shares = [next(c for c in r["service"] if c["concurrency"] == TARGET_CONCURRENCY)["items_per_s"]
              / r["bare"]["items_per_s"] for r in rounds]
    bare_speeds = [r["bare"]["items_per_s"] for r in rounds]
    middle = rounds[int(np.argsort(bare_speeds)[len(bare_speeds) // 2])]["bare"]  # the median round's bare run
    share = float(np.median(shares))
    return {"files": rounds[0]["files"], "bare": {**middle, "items_per_s_rounds": bare_speeds},
            "service": median_cells([r["service"] for r in rounds]),
            "target": {"share_of_bare": round(share, 2), "share_rounds": [round(x, 2) for x in shares],
                       "met": bool(share >= TARGET_SHARE)}}
