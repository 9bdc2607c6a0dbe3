"""Part 4: search at 100k and 1M 384-d items: exact and ANN indexes, fixed vs per-request mixing, memory.

Items are stored the way the service stores a combination bond's output: two leaves per item (the base
embedding and an expert's projection) with their Gram matrix, plus the vector under the collection's
default mixing (f = 0.3), which is what the FAISS index holds. Base leaves are real: MiniLM embeddings of
Multi30k captions, then clustered synthetic fill (a real caption's vector plus noise) up to the size.
The expert leaf shares the item's signal through its own noise (cosine ~0.8 to the base leaf), so a
different factor really reorders results. Queries are 100 other real captions.

Three searches are compared at each index setting:
- the bare FAISS index on the default-mixing vectors (ids and scores only: no keys, no metadata);
- the service's fixed-mixing search: `Collection.search` under the collection's default mixing (f = 0.3),
  which reads the index's scores as they are and returns keys, modality and metadata;
- per-request mixing (f = 0.6): `Collection.search(mode="ann")`: `rerank_factor * k` candidates from
  the same index, re-scored exactly from the components under the request's mixing, same answer shape.
The target compares the last two (the cost of mixing per request in the same service); the bare index
is the floor both stand on, and its ratio is reported too.
Recall@10 is against exhaustive exact scoring under the same mixing. One query per call, one at a
time, as a server handles a request; figures are queries/s of that loop, the median over passes repeated
for at least a second.

Every index is built at both sizes; the HNSW graph (M=32, efConstruction 80, 200 at 1M: see `build_params`)
is the slow one to build, which is reported beside its search figures.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import faiss
import numpy as np

from bench.common import CACHE, PeakRSS, captions, log, pyplot, quick, rss_bytes, save_plot
from bonds.plan import Encode, Project, Sum, gram
from bonds.remix import remix_vectors
from bonds.vectors import l2_normalize
from service.index import CollectionStore, Record
from service.index.ann import Ann
from service.index.index_settings import IndexSettings

DIM, K = 384, 10
DEFAULT_F, MIXED_F = 0.3, 0.6
BASE, EXPERT = Encode("base", "text"), Encode("expert", "text")
LEAVES = [BASE, Project("bond/expert", EXPERT)]
KEYS = [leaf.key for leaf in LEAVES]
SWEEPS = {"flat": [{}], "hnsw": [{"ef_search": e} for e in (16, 32, 64, 128, 256, 512, 1024, 2048)],
          "ivf": [{"nprobe": p} for p in (2, 4, 8, 16, 32, 64, 128)]}
RERANK_FACTORS = (3, 10, 30)  # 10 is the service's default; 3 trades recall margin for fewer candidates
DEFAULT_RERANK = IndexSettings().rerank_factor
TARGET_RECALL, TARGET_RATIO = 0.95, 2.0
HNSW_1M_EF_CONSTRUCTION = 200


def plan(f: float) -> Sum:
    """n((1 - f) base + f P(expert)): a combination bond with one expert."""
    return Sum(((1.0 - f, BASE), (f, LEAVES[1])))


def real_embeddings(count: int, start: int = 0) -> np.ndarray:
    """MiniLM embeddings of Multi30k captions start..start+count, cached under .bench-cache/."""
    path = CACHE / f"search-minilm-{start}-{count}.npy"
    if path.is_file():
        return np.load(path)
    from bonds.encoders.minilm import MiniLMEncoder

    texts = captions("en", start, start + count)
    order = np.argsort([len(t) for t in texts])  # similar lengths pad less
    started = time.perf_counter()
    vectors = np.empty((count, DIM), np.float32)
    vectors[order] = MiniLMEncoder().encode("text", [texts[i] for i in order]).vectors
    log.info("embedded %d captions in %.0f s", count, time.perf_counter() - started)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def leaves_block(real_nd: np.ndarray, start: int, stop: int, rng: np.random.Generator) -> np.ndarray:
    """Leaves (m, 2, d) of items start..stop: real captions first, then noisy copies of them."""
    m = stop - start
    base = np.empty((m, DIM), np.float32)
    real = max(0, min(stop, len(real_nd)) - start)
    base[:real] = real_nd[start : start + real]
    if real < m:
        centres = real_nd[rng.integers(0, len(real_nd), m - real)]
        base[real:] = l2_normalize(
            centres + 0.7 * rng.standard_normal((m - real, DIM), dtype=np.float32) / np.sqrt(DIM))
    expert = l2_normalize(base + 0.7 * rng.standard_normal((m, DIM), dtype=np.float32) / np.sqrt(DIM))
    return np.stack([base, expert], axis=1)


def ingest(collection, n: int, real_nd: np.ndarray, block: int = 5000) -> float:
    """Upsert n items through the durable write path; returns items/s."""
    rng = np.random.default_rng(1)
    default = plan(DEFAULT_F)
    started = time.perf_counter()
    for s in range(0, n, block):
        leaves = leaves_block(real_nd, s, min(s + block, n), rng)
        grams = gram(leaves)
        vectors = remix_vectors(default, KEYS, leaves, grams)
        collection.upsert("bench-id", [Record(str(s + i), "text", {}, KEYS, leaves[i], grams[i], vectors[i])
                                       for i in range(len(leaves))])
    return n / (time.perf_counter() - started)


def exact_top(vectors_nd: np.ndarray, queries_qd: np.ndarray) -> list[set[int]]:
    """Rows of each query's K best by inner product, in blocks (never an n x q matrix of doubles)."""
    best_s = np.full((len(queries_qd), K), -np.inf, np.float32)
    best_i = np.zeros((len(queries_qd), K), np.int64)
    for s in range(0, len(vectors_nd), 200_000):
        scores = queries_qd @ vectors_nd[s : s + 200_000].T
        both_s = np.concatenate([best_s, scores], axis=1)
        both_i = np.concatenate([best_i, np.arange(s, s + scores.shape[1])[None].repeat(len(scores), 0)], axis=1)
        keep = np.argpartition(-both_s, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(both_s, keep, 1), np.take_along_axis(both_i, keep, 1)
    return [set(row.tolist()) for row in best_i]


def recall(found: list[set[int]], truth: list[set[int]]) -> float:
    return round(float(np.mean([len(a & b) / K for a, b in zip(found, truth, strict=True)])), 4)


def timed(search, queries_qd: np.ndarray, min_seconds: float = 1.0,
          max_passes: int = 15) -> tuple[float, list[set[int]]]:
    """Queries/s of one-at-a-time calls (the median over passes of all queries, repeated until `min_seconds`:
    one pass of a fast index is ~30 ms, which one hiccup of the shared machine can halve), and each
    query's result rows (first pass)."""
    rates, found = [], []
    while not rates or (sum(len(queries_qd) / r for r in rates) < min_seconds and len(rates) < max_passes):
        started, results = time.perf_counter(), [search(q) for q in queries_qd]
        rates.append(len(queries_qd) / (time.perf_counter() - started))
        found = found or results
    return float(np.median(rates)), found


def build_params(kind: str, n: int) -> dict[str, Any]:
    """Build settings other than the service's defaults: HNSW at 1M items with efConstruction 200, since with
    the default 80 its recall@10 on this clustered fill levelled off at 0.946 (efSearch 2048) in earlier runs."""
    return {"ef_construction": HNSW_1M_EF_CONSTRUCTION} if kind == "hnsw" and n >= 1_000_000 else {}


def measure_index(collection, view, kind: str, queries_qd, truth_fixed, truth_mixed) -> dict[str, Any]:
    """Build `kind` over the stored vectors, then sweep its recall lever for both searches."""
    rows_of_ids = view.ids  # ascending: a FAISS id's row is its position here
    built_with = build_params(kind, len(view.ids))
    settings = IndexSettings(type=kind, search="ann", gpu=False, **built_with)
    ann = Ann(settings, DIM)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # single-query searches pinned this thread to one
    started = time.perf_counter()
    ann.rebuild(view.ids, view.vectors)
    build_s = time.perf_counter() - started
    index_bytes = int(len(ann.to_bytes()))
    collection.backend.ann = ann
    out = {"build_s": round(build_s, 1), "build_params": built_with or "defaults",
           "index_mib": round(index_bytes / 2**20, 1),
           "index_bytes_per_vector": round(index_bytes / len(view.ids), 1), "sweep": []}
    mixed, default = {"text": plan(MIXED_F)}, {"text": plan(DEFAULT_F)}
    for params in SWEEPS[kind]:
        for factor in RERANK_FACTORS:
            settings = IndexSettings(type=kind, search="ann", gpu=False, rerank_factor=factor, **built_with, **params)
            collection.settings = ann.settings = settings

            def fixed_search(q):
                return set(np.searchsorted(rows_of_ids, ann.search(q, K)[1][0]).tolist())

            def mixed_search(q, plans=mixed):
                return {int(h.key) for h in collection.search(plans, q, K, mode="ann")}

            def service_fixed_search(q):
                return {int(h.key) for h in collection.search(default, q, K, mode="ann", at_default_mixing=True)}

            row = {**params, "rerank_factor": factor}
            if factor == DEFAULT_RERANK:  # neither fixed search re-scores: measured once per setting
                qps, found = timed(fixed_search, queries_qd)
                row.update(fixed_qps=round(qps, 1), fixed_recall=recall(found, truth_fixed))
                qps, found = timed(service_fixed_search, queries_qd)
                row.update(service_fixed_qps=round(qps, 1), service_fixed_recall=recall(found, truth_fixed))
            qps, found = timed(mixed_search, queries_qd)
            row.update(mixed_qps=round(qps, 1), mixed_recall=recall(found, truth_mixed))
            log.info("    %s %s", kind, row)
            out["sweep"].append(row)
    return out


def at_recall(sweep: list[dict], which: str) -> dict | None:
    """The fastest setting whose recall@10 reaches the target."""
    ok = [r for r in sweep if r.get(f"{which}_recall", 0) >= TARGET_RECALL]
    return max(ok, key=lambda r: r[f"{which}_qps"]) if ok else None


def verdict(sweep: list[dict]) -> dict[str, Any]:
    """Each search's fastest setting at the target recall; mixed against the service's fixed-mixing search
    (the target) and against the bare index."""
    bare, service, mixed = at_recall(sweep, "fixed"), at_recall(sweep, "service_fixed"), at_recall(sweep, "mixed")
    slowdown = round(service["service_fixed_qps"] / mixed["mixed_qps"], 2) if service and mixed else None
    vs_bare = round(bare["fixed_qps"] / mixed["mixed_qps"], 2) if bare and mixed else None
    return {"fixed": bare, "service_fixed": service, "mixed": mixed, "slowdown": slowdown,
            "slowdown_vs_bare_index": vs_bare,
            "met": bool(slowdown is not None and slowdown <= TARGET_RATIO)}


def one_size(n: int, real_nd: np.ndarray, queries_qd: np.ndarray) -> dict[str, Any]:
    log.info("  %d items", n)
    with tempfile.TemporaryDirectory(prefix="bench-search-", dir=CACHE) as folder:
        store = CollectionStore(folder, snapshot_every=10**9)
        store.open()
        collection = store.create("bench", "bench", "bench-id", DIM, {"type": "flat", "search": "ann"}, {})
        before = rss_bytes()
        with PeakRSS() as peak:
            rate = ingest(collection, n, real_nd)
        held = rss_bytes() - before  # components, default vectors and the flat index, all in memory
        view = collection.backend.groups["text"].view()
        truth_fixed = exact_top(view.vectors, queries_qd)
        started = time.perf_counter()
        truth_mixed = exact_top(remix_vectors(plan(MIXED_F), KEYS, view.leaves, view.gram), queries_qd)
        exact_qps, _ = timed(lambda q: collection.search({"text": plan(MIXED_F)}, q, K, mode="exact"), queries_qd[:20])
        row = {"n": n, "ingest_items_per_s": round(rate), "rss_held_mib": round(held / 2**20),
               "rss_per_million_mib": round(held / n * 1e6 / 2**20), "ingest_peak_rss_mib": round(peak.peak / 2**20),
               "exact_mixed_qps": round(exact_qps, 2), "truth_s": round(time.perf_counter() - started, 1),
               "indexes": {}}
        log.info("  ingest %d items/s, %d MiB held (%d MiB per million)", rate, row["rss_held_mib"],
                 row["rss_per_million_mib"])
        for kind in ("flat", "hnsw", "ivf"):
            result = measure_index(collection, view, kind, queries_qd, truth_fixed, truth_mixed)
            result["at_target"] = verdict(result["sweep"])
            row["indexes"][kind] = result
            collection.backend.ann = None
        store.drop("bench")
        store.close()
    return row


def plot(sizes: list[dict]) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 3.8), squeeze=False)
    # one colour per index, one style per search
    colours = {"flat": "tab:blue", "hnsw": "tab:orange", "ivf": "tab:green"}
    for ax, size in zip(axes[0], sizes, strict=True):
        for kind, result in size["indexes"].items():
            colour = colours.get(kind)
            fixed = [r for r in result["sweep"] if "fixed_qps" in r]
            ax.plot([r["fixed_recall"] for r in fixed], [r["fixed_qps"] for r in fixed], "o-", ms=3, color=colour,
                    label=f"{kind}, bare index")
            ax.plot([r["service_fixed_recall"] for r in fixed], [r["service_fixed_qps"] for r in fixed], "D-", ms=3,
                    color=colour, alpha=0.55, label=f"{kind}, service at its fixed mixing")
            for factor, style in zip(RERANK_FACTORS, ("s--", "^-.", "v:"), strict=True):
                mixed = [r for r in result["sweep"] if r["rerank_factor"] == factor]
                ax.plot([r["mixed_recall"] for r in mixed], [r["mixed_qps"] for r in mixed], style, ms=3, color=colour,
                        label=f"{kind}, per-request mixing (rerank x{factor})")
        ax.axvline(TARGET_RECALL, color="grey", ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries/s (one at a time)")
        ax.set_title(f"{size['n']:,} items, 384-d", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return save_plot(fig, "search")


def run() -> dict[str, Any]:
    sizes = (3_000, 12_000) if quick() else (100_000, 1_000_000)
    real_nd = real_embeddings(1_000 if quick() else 10_000)
    queries_qd = real_embeddings(20 if quick() else 100, start=20_000)
    CACHE.mkdir(parents=True, exist_ok=True)
    results = [one_size(n, real_nd, queries_qd) for n in sizes]
    return {"dim": DIM, "k": K, "default_f": DEFAULT_F, "mixed_f": MIXED_F, "queries": len(queries_qd),
            "real_items": len(real_nd), "target": {"recall": TARGET_RECALL, "max_slowdown": TARGET_RATIO},
            "sizes": results, "plot": plot(results)}
