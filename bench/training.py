"""Part 5: training cost: pseudo-pair collection (100k queries against a 100k bank) and one projector fit.

Runs the training package's own stages (`training.pairs.build_pairs`, `training.fit.fit`) on a work
folder laid out exactly as `training.embed` writes it, filled with synthetic unit vectors instead of
encoder outputs: the cost of these stages depends on counts and dimensions, not on what the vectors
mean, and encoding 200k real items would take this machine most of an hour. The vectors are clustered
(1000 centres) so each query's top-k softmax is peaked as with real embeddings.

Layout: space `src` embeds image and text, `tgt` only text; pool `queries` (image, in `src` only) is
paired through the `bank` pool (text, in both): every query retrieves its top-k bank rows in `src`
(FAISS flat inner product) and averages the same rows in `tgt`. The fit runs the default head (hidden
2048, batch 4096) for one epoch: samples/s does not depend on how many epochs follow.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import PeakRSS, log, quick
from bonds.vectors import l2_normalize
from training.embed import pool_folder, shard_path
from training.fit import FitConfig, fit
from training.pairs import PairsConfig, build_pairs

DIM = 384
SHARD = 8192  # training.embed's default shard size


def clustered(n: int, rng: np.random.Generator, centres_kd: np.ndarray, spread: float = 0.6) -> np.ndarray:
    picked_nd = centres_kd[rng.integers(0, len(centres_kd), n)]  # drawn first, then the noise: the seeded order
    x = picked_nd + spread * rng.standard_normal((n, DIM), dtype=np.float32) / np.sqrt(DIM)
    return l2_normalize(x)


def write_pool(workdir: Path, space: str, pool: str, modality: str, vectors_nd: np.ndarray) -> None:
    """Shards and sidecars as `training.embed.embed_shard` writes them."""
    from safetensors.numpy import save_file

    folder = pool_folder(workdir, space, pool)
    folder.mkdir(parents=True, exist_ok=True)
    for index, start in enumerate(range(0, len(vectors_nd), SHARD)):
        stop = min(start + SHARD, len(vectors_nd))
        save_file({"vectors": vectors_nd[start:stop]}, str(shard_path(folder, index)))
        sidecar = {"ids": [f"{pool}-{i}" for i in range(start, stop)], "pool": f"{pool}={modality}:synthetic",
                   "space": space, "modality": modality, "start": start, "stop": stop}
        shard_path(folder, index).with_suffix(".json").write_text(json.dumps(sidecar) + "\n")


def write_space(workdir: Path, space: str, modalities: list[str]) -> None:
    folder = Path(workdir) / "embeddings" / space
    folder.mkdir(parents=True, exist_ok=True)
    info = {"spec": {"name": space, "kind": "synthetic"}, "dim": DIM, "modalities": modalities}
    (folder / "space.json").write_text(json.dumps(info, indent=2) + "\n")


def prepare(workdir: Path, queries: int, bank: int) -> None:
    rng = np.random.default_rng(0)
    centres_src = rng.standard_normal((1000, DIM), dtype=np.float32) / np.sqrt(DIM)
    centres_tgt = rng.standard_normal((1000, DIM), dtype=np.float32) / np.sqrt(DIM)
    labels = rng.integers(0, 1000, bank)  # a bank item sits in the same cluster in both spaces
    write_space(workdir, "src", ["text", "image"])
    write_space(workdir, "tgt", ["text"])
    write_pool(workdir, "src", "queries", "image", clustered(queries, rng, centres_src))
    for space, centres in (("src", centres_src), ("tgt", centres_tgt)):
        x = centres[labels] + 0.6 * rng.standard_normal((bank, DIM), dtype=np.float32) / np.sqrt(DIM)
        write_pool(workdir, space, "bank", "text", l2_normalize(x))


def run() -> dict[str, Any]:
    queries = bank = 2_000 if quick() else 100_000
    with tempfile.TemporaryDirectory(prefix="bench-training-") as folder:
        workdir = Path(folder)
        prepare(workdir, queries, bank)
        config = PairsConfig(source="src", target="tgt", pools=["queries"], bank=["bank"])
        log.info("pairs: %d queries against a %d bank (k=%d, block %d)", queries, bank, config.k, config.block)
        with PeakRSS() as rss:
            started = time.perf_counter()
            summary = build_pairs(workdir, config, progress=False)
            pair_s = time.perf_counter() - started
        pairs = {"queries": queries, "bank": bank, "k": config.k, "block": config.block, "seconds": round(pair_s, 1),
                 "queries_per_s": round(queries / pair_s, 1), "peak_rss_mib": round(rss.peak / 2**20),
                 "rss_growth_mib": round((rss.peak - rss.before) / 2**20), "summary": summary["centres"]}
        log.info("  %.0f queries/s, peak RSS %d MiB", pairs["queries_per_s"], pairs["peak_rss_mib"])
        fit_config = FitConfig(kind="displacement", epochs=1)
        with PeakRSS() as rss:
            started = time.perf_counter()
            fit(workdir, fit_config, progress=False)
            fit_s = time.perf_counter() - started
        report = json.loads((workdir / "fit" / "fit.json").read_text())
        fitted = {"samples": sum(report["modes"].values()), "epochs": 1, "hidden": fit_config.hidden,
                  "batch_size": fit_config.batch_size, "seconds": round(fit_s, 1),
                  "samples_per_s": report["samples_per_second_this_run"], "peak_rss_mib": round(rss.peak / 2**20),
                  "modes": report["modes"]}
        log.info("  fit: %.0f samples/s, peak RSS %d MiB", fitted["samples_per_s"], fitted["peak_rss_mib"])
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return {"pairs": pairs, "fit": fitted, "process_peak_rss_mib": round(max_rss / 2**20)}
