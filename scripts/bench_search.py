"""Search latency and fast-path recall of the collection store on synthetic components.

    python scripts/bench_search.py --n 100000 --dim 384

Items are clustered (so nearest neighbours mean something) and stored as a combination bond's three
leaves (base, and two experts' projections that share the base's item-level signal, as trained bonds
do), like ImageBind++ text. The collection's default mixing is f = 0.3; queries use f = 0.3, 0.5 and
0.9, so the ANN index (built on default-mixing vectors) only proposes candidates and the exact
re-scoring under the request's mixing decides. Recall@k is against exhaustive exact scoring under the
same mixing.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import typer

from bonds.plan import Encode, Project, Sum, gram
from bonds.remix import remix_vectors
from service.index import CollectionStore, Record

log = logging.getLogger("bench_search")
BASE, EXPERT_G, EXPERT_M = Encode("base", "text"), Encode("clap_g", "text"), Encode("clap_m", "text")
LEAVES = [BASE, Project("clap/clap_g", EXPERT_G), Project("clap/clap_m", EXPERT_M)]


def plan(f: float) -> Sum:
    """n((1 - f) base + f n(P_g + P_m)): a combination bond over two parallel experts."""
    return Sum(((1.0 - f, BASE), (f, Sum(((1.0, LEAVES[1]), (1.0, LEAVES[2]))))))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic(n: int, dim: int, rng: np.random.Generator, block: int = 10_000) -> np.ndarray:
    """Leaves (n, 3, d): an item signal (cluster centre + noise) seen by each leaf through its own noise."""
    centres = rng.standard_normal((max(n // 100, 1), dim)).astype(np.float32)
    leaves = np.empty((n, 3, dim), dtype=np.float32)
    for s in range(0, n, block):
        m = min(block, n - s)
        item = centres[rng.integers(0, len(centres), m)] + 0.7 * rng.standard_normal((m, dim)).astype(np.float32)
        leaves[s: s + m] = item[:, None, :] + 0.8 * rng.standard_normal((m, 3, dim)).astype(np.float32)
    leaves[:, 0] = unit(leaves[:, 0])
    return leaves


def measure(collection, plans, queries: np.ndarray, top_k: int, filter_, mode: str) -> tuple[float, list[set[str]]]:
    """Mean milliseconds per query and each query's result ids."""
    found, started = [], time.perf_counter()
    for query in queries:
        found.append({h.key for h in collection.search(plans, query, top_k, filter_, mode=mode)})
    return 1000 * (time.perf_counter() - started) / len(queries), found


def recall(approx: list[set[str]], exact: list[set[str]], k: int) -> float:
    return round(float(np.mean([len(a & e) / k for a, e in zip(approx, exact, strict=True)])), 4)


def main(
    n: int = typer.Option(100_000, "--n", envvar="FREEBIND_BENCH_N", help="items in the collection"),
    dim: int = typer.Option(384, "--dim", envvar="FREEBIND_BENCH_DIM", help="vector dimension"),
    queries: int = typer.Option(50, "--queries", envvar="FREEBIND_BENCH_QUERIES", help="queries per measurement"),
    top_k: int = typer.Option(10, "--top-k", envvar="FREEBIND_BENCH_TOP_K", help="results per query"),
    out: Path = typer.Option(None, "--out", envvar="FREEBIND_BENCH_OUT", help="write the figures as JSON here"),
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(0)
    leaves = synthetic(n, dim, rng)
    grams = gram(leaves)
    keys = [leaf.key for leaf in LEAVES]
    vectors = remix_vectors(plan(0.3), keys, leaves, grams)  # the collection's default mixing
    picked = rng.integers(0, n, queries)
    noise = 0.3 * rng.standard_normal((queries, dim)).astype(np.float32)
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        store = CollectionStore(folder, snapshot_every=10**9)
        store.open()
        for index in ({"type": "flat"}, {"type": "hnsw"}, {"type": "ivf", "nlist": 1024, "nprobe": 64}):
            name = index["type"]
            collection = store.create(name, "bench", "bench-id", dim, index, {})
            started = time.perf_counter()
            for s in range(0, n, 2000):
                collection.upsert("bench-id", [Record(f"k{i}", "text", {"bucket": i % 10}, keys, leaves[i], grams[i],
                                                      vectors[i]) for i in range(s, min(s + 2000, n))])
            row = {"ingest_items_per_s": round(n / (time.perf_counter() - started))}
            started = time.perf_counter()
            collection.snapshot()  # also retrains IVF on everything
            row["snapshot_s"] = round(time.perf_counter() - started, 2)
            for f in (0.3, 0.5, 0.9):
                plans = {"text": plan(f)}
                query_nd = unit(remix_vectors(plan(f), keys, leaves[picked], grams[picked]) + noise)
                for label, filter_ in (("", None), ("filtered_10pct_", {"bucket": {"in": [3]}})):
                    exact_ms, exact = measure(collection, plans, query_nd, top_k, filter_, "exact")
                    ann_ms, ann = measure(collection, plans, query_nd, top_k, filter_, "ann")
                    row[f"f{f}_{label}exact_ms"] = round(exact_ms, 1)
                    row[f"f{f}_{label}ann_rerank_ms"] = round(ann_ms, 1)
                    row[f"f{f}_{label}recall@{top_k}"] = recall(ann, exact, top_k)
            figures[name] = row
            log.info("%s: %s", name, row)
            store.drop(name)
        store.close()
    if out is not None:
        out.write_text(json.dumps({"n": n, "dim": dim, "top_k": top_k, "rerank_factor": 10, "figures": figures}, indent=2))


if __name__ == "__main__":
    typer.run(main)
