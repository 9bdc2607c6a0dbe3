"""Part 7: ImageBind-huge on a GPU, bare and served, with the project's own encoder and server.

ImageBind-huge's real architecture (1.07 B parameters) with random weights, saved as a user's checkpoint
and loaded through `create_encoder("imagebind", ...)` / `python -m service --space imagebind --device cuda`
(speed does not depend on the weights' values). Per modality:
- bare: the encoder's `forward` on a prepared batch already in host memory, fp32 and bf16, at batch 16, 64
  and 256 (audio: 16 and 64), FLOPs per item from torch's FlopCounterMode, and the share of the GPU's
  dense bf16 peak;
- prepare: items/s of the per-item CPU step (`Encoder.prepare`) on 1 thread and on the pipeline's pool;
- served: 32 and 64 closed-loop clients posting base64 media (4 images, 32 texts or 2 clips a request),
  items/s with p50/p99, and the ratio served / bare bf16 at the encoder's GPU batch.

Runs where the machine's Python has torch but not the service's other packages (they travel as wheels on
PYTHONPATH; see docs/deploy.md). `BENCH_QUICK=1` dry-runs everything on the CPU with the tiny config.
"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import load as loadgen
from bench.common import CACHE, log, quick, shared_data
from bench.servers import freebind

# Dense bf16 tensor-core peaks from the vendors' datasheets (no sparsity), by a name fragment of the device.
PEAK_BF16_TFLOPS = {"H200 NVL": 835, "H200": 989, "H100 NVL": 835, "H100": 989, "A100": 312, "L40S": 362,
                    "L4": 121, "A10": 125}
BATCHES = {"image": (16, 64, 256), "text": (16, 64, 256), "audio": (16, 64)}
PER_REQUEST = {"image": 4, "text": 32, "audio": 2}
CLIENTS = (32, 64)


def run() -> dict[str, Any]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not quick():
        raise SystemExit("part gpu needs a CUDA device; BENCH_QUICK=1 dry-runs it on the CPU with the tiny model")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)"
    peak = next((tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)
    root = write_models(tiny=quick())
    inputs = media()
    figures: dict[str, Any] = {"device": name, "peak_bf16_tflops": peak, "tiny": quick()}
    figures["bare"] = bare(root, device, inputs, peak)
    figures["served"] = served(root, device, inputs)
    figures["served_over_bare"] = {
        m: round(max(c["items_per_s"] for c in figures["served"][m]) / figures["bare"][m]["best_bf16_items_per_s"], 3)
        for m in figures["served"]}
    return figures


def write_models(tiny: bool):
    """A models root as a user lays it out: imagebind/imagebind_huge.pth (random weights, bf16 on disk) and
    CLIP's BPE merges beside it (tiny: the sizes in imagebind_config.json)."""
    import torch

    from bonds.encoders.imagebind_model import ImageBindConfig, ImageBindModel

    root = CACHE / ("gpu-models-tiny" if tiny else "gpu-models")
    folder = root / "imagebind"
    checkpoint = folder / "imagebind_huge.pth"
    if checkpoint.is_file():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    config = ImageBindConfig.tiny() if tiny else ImageBindConfig.huge()
    torch.manual_seed(0)
    model = ImageBindModel(config).eval()
    torch.save({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()},
               checkpoint)
    if tiny:
        (folder / "imagebind_config.json").write_text(json.dumps({k: v for k, v in config.__dict__.items() if k in (
            "out_dim", "vision_width", "vision_layers", "vision_heads", "text_width", "text_layers", "text_heads",
            "audio_width", "audio_layers", "audio_heads")}))
    (folder / "bpe_simple_vocab_16e6.txt.gz").write_bytes(
        (shared_data() / "clip-bpe" / "bpe_simple_vocab_16e6.txt.gz").read_bytes())
    log.info("wrote %s (%.1f M parameters)", checkpoint, sum(p.numel() for p in model.parameters()) / 1e6)
    return root


def media() -> dict[str, list[bytes] | list[str]]:
    """Real inputs: COCO-mini photos, ESC-50 and ImageBind-demo clips, COCO captions."""
    data = shared_data()
    photos = [p.read_bytes() for p in sorted((data / "coco-mini" / "images").glob("*.jpg"))[:32]]
    clips = [p.read_bytes() for p in [*sorted((data / "esc50-demo").glob("*.wav")),
                                      *sorted((data / "imagebind-demo").glob("*.wav"))]]
    rows = [json.loads(line) for line in (data / "coco-mini" / "captions.jsonl").read_text().splitlines()]
    return {"image": photos, "audio": clips, "text": [c for r in rows for c in r["captions"]][:256]}


def bare(root, device: str, inputs: dict, peak: float | None) -> dict[str, Any]:
    from bonds.encoders import create_encoder
    from bonds.media import decode_audio, decode_image

    decode = {"image": decode_image, "audio": decode_audio, "text": lambda t: t}
    out: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        encoder = create_encoder("imagebind", checkpoint=str(root / "imagebind" / "imagebind_huge.pth"),
                                 device=device, dtype=dtype)
        for modality, batches in BATCHES.items():
            sizes = (4, 8) if quick() else batches
            items = [decode[modality](inputs[modality][i % len(inputs[modality])]) for i in range(max(sizes))]
            prepared = [encoder.prepare(modality, item) for item in items]
            cell = out.setdefault(modality, {"batches": {}})
            if dtype == "float32":
                cell["gflop_per_item"] = round(flops_per_item(encoder, modality, prepared[:1]) / 1e9, 2)
                cell["prepare_items_per_s"] = prepare_rates(encoder, modality, items)
            for size in sizes:
                rate = forward_rate(encoder, modality, prepared[:size], device)
                cell["batches"][f"{dtype}_b{size}"] = {
                    "items_per_s": round(rate, 1), "tflops": round(rate * cell["gflop_per_item"] / 1e3, 1),
                    "share_of_bf16_peak": round(rate * cell["gflop_per_item"] / 1e3 / peak, 3) if peak else None}
            log.info("bare %s %s: %s", modality, dtype, {k: v["items_per_s"] for k, v in cell["batches"].items()})
        del encoder
        _free(device)
    for cell in out.values():
        cell["best_bf16_items_per_s"] = max(v["items_per_s"] for k, v in cell["batches"].items() if "bfloat16" in k)
    return out


def flops_per_item(encoder, modality: str, prepared: list) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encoder.forward(modality, encoder.preprocess(modality, prepared))
    return float(counter.get_total_flops())


def forward_rate(encoder, modality: str, prepared: list, device: str) -> float:
    """Items/s of `forward` (host batch -> device -> model) in the encoder's precision, after one warm-up."""
    import torch

    from bonds.encoders.precision import autocast

    batch = encoder.preprocess(modality, prepared)
    repeats = 2 if quick() else 5

    def once():
        with torch.inference_mode(), autocast(encoder.precision, encoder.device):
            encoder.forward(modality, batch)

    once()
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    _sync(device)
    return len(prepared) * repeats / (time.perf_counter() - started)


def prepare_rates(encoder, modality: str, items: list) -> dict[str, float]:
    """Items/s of the per-item CPU step, one thread and the pipeline's pool (one per core, at most 16)."""
    import os

    rates = {}
    for threads in sorted({1, max(1, min(16, os.cpu_count() or 1))}):
        with ThreadPoolExecutor(threads) as pool:
            started = time.perf_counter()
            list(pool.map(lambda item: encoder.prepare(modality, item), items))
            rates[f"{threads}_threads"] = round(len(items) / (time.perf_counter() - started), 1)
    return rates


def served(root, device: str, inputs: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    with freebind("imagebind", "gpu", models_root=str(root), device=device) as (base, _):
        for modality, per in PER_REQUEST.items():
            pool = inputs[modality]
            encode = (lambda x: x) if modality == "text" else (lambda x: base64.b64encode(x).decode())
            bodies = [json.dumps({"inputs": [{modality: encode(pool[(i * per + j) % len(pool)])} for j in range(per)]})
                      .encode() for i in range(16)]
            for clients in (2,) if quick() else CLIENTS:
                requests = 2 * clients if quick() else max(8 * clients, 2048 // per)
                cell = loadgen.run(base + "/embed", bodies, per, clients, requests)
                log.info("served %s at %d clients: %.1f items/s, p50 %.0f ms, p99 %.0f ms, errors %s", modality,
                         clients, cell["items_per_s"], cell["p50_ms"], cell["p99_ms"], cell["errors"] or "-")
                out.setdefault(modality, []).append({"clients": clients, "per_request": per, **cell})
    return out


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
