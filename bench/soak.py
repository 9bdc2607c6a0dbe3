"""`make soak`: the long reliability runs against real `freebind serve` processes on 127.0.0.1.

1. load: 64 concurrent clients for 2 minutes mixing embed (text, image, audio; mixings), ingest (upserts
   over a bounded id pool), search (mixings, filters) and delete, with the default queue: no 5xx, no 429,
   resident memory of the server sampled every second.
   reads: the same for embed and search only, on a collection filled first (memory per request, apart
   from what writes store).
2. back-pressure: the same clients against FREEBIND_MAX_QUEUE=8: 429s appear, each with Retry-After and
   only when the items in flight plus the request's would pass the limit; still no 5xx.
3. crash: 20 trials of SIGKILL during concurrent ingestion (harness/crash.py).

Stops by itself; loopback only. Writes `docs/reliability_soak.json` (figures) and
`docs/reliability_rss.png` (the memory curve). Usage: python bench/soak.py [--duration 120] [--clients 64]
[--trials 20] [--skip load,reads,queue,crash]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import bad_media as media  # noqa: E402
from harness.crash import run_trials  # noqa: E402
from harness.servers import Server  # noqa: E402
from harness.tiny_space import write_space  # noqa: E402

log = logging.getLogger("soak")
POOL = 40  # ids per client: upserts replace, so the collection stays bounded (clients x POOL items)
WORDS = "dog cat bird car tree river music voice night city rain sun piano engine forest ocean".split()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


IMAGES = [_b64(media.image("PNG", (32, 24), seed=s)) for s in range(8)]
SOUNDS = [_b64(media.wav(0.5, rate=16_000)), _b64(media.wav(0.25, rate=8_000)), _b64(media.wav(0.3, rate=44_100))]
MIXINGS = [None, {"preset": "strong"}, {"factors": {"aux": {"text": 0.0}}},
           {"factors": {"aux": {"text": 1.0, "audio": 0.2}}},
           {"off": ["aux"]}]


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))


def an_input(rng: random.Random) -> dict[str, str]:
    kind = rng.random()
    if kind < 0.6:
        return {"text": text(rng)}
    if kind < 0.85:
        return {"image": rng.choice(IMAGES)}
    return {"audio": rng.choice(SOUNDS)}


class Tally:
    def __init__(self) -> None:
        self.status: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.problems: list[str] = []  # unexpected answers, kept short
        self.retry_after: Counter[str] = Counter()
        self.overload_ok = 0  # 429s whose detail shows the queue was in fact full

    def record(self, op: str, status: int, seconds: float) -> None:
        self.status[(op, status)] += 1
        self.latency[op].append(seconds)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text[:300])


async def client_loop(n: int, base: str, deadline: float, tally: Tally, rng: random.Random, ops: str,
                      max_queue: int, mixings: list[dict | None]) -> None:
    mine: set[str] = set()
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        while time.monotonic() < deadline:
            pick = rng.random()
            if ops == "reads":
                op = "embed" if pick < 0.6 else "search"
            else:
                op = ("embed" if ops == "embed" or pick < 0.4 else "ingest" if pick < 0.65
                      else "search" if pick < 0.9 else "delete")
            started = time.perf_counter()
            n_items = 1
            try:
                if op == "embed":
                    inputs = [an_input(rng) for _ in range(rng.randint(1, 4))]
                    n_items = len(inputs)
                    body: dict[str, Any] = {"inputs": inputs}
                    if (mixing := rng.choice(mixings)) is not None:
                        body["mixing"] = mixing
                    r = await http.post("/embed", json=body)
                elif op == "ingest":
                    ids = {f"c{n}-{rng.randrange(POOL)}" for _ in range(rng.randint(1, 8))}
                    items = [{"id": i, **an_input(rng), "metadata": {"client": n, "tag": rng.choice(WORDS),
                                                                     "n": rng.randint(0, 100)}} for i in ids]
                    n_items = len(items)
                    r = await http.post("/collections/load/items", json={"items": items})
                    if r.status_code == 200:
                        mine |= ids
                elif op == "search":
                    body = {"collection": "load", "query": an_input(rng), "top_k": rng.choice([1, 10, 50])}
                    if (mixing := rng.choice(mixings)) is not None:
                        body["mixing"] = mixing
                    if rng.random() < 0.3:
                        body["filter"] = {"n": {"gte": rng.randint(0, 50)}}
                    r = await http.post("/search", json=body)
                else:
                    item = rng.choice(sorted(mine)) if mine and rng.random() < 0.8 else f"c{n}-{rng.randrange(POOL)}"
                    r = await http.delete(f"/collections/load/items/{item}")
                    mine.discard(item)
            except httpx.HTTPError as exc:
                tally.record(op, -1, time.perf_counter() - started)
                tally.problem(f"{op}: {type(exc).__name__}: {exc}")
                continue
            tally.record(op, r.status_code, time.perf_counter() - started)
            if r.status_code == 429:
                tally.retry_after[r.headers.get("retry-after", "(none)")] += 1
                found = re.search(r"(\d+) items are in flight \(limit (\d+)\)", r.json().get("detail", ""))
                if found and int(found[1]) + n_items > int(found[2]) == max_queue:
                    tally.overload_ok += 1
                else:
                    tally.problem(f"429 without a full queue: {r.text}")
            elif r.status_code >= 500 or (r.status_code >= 400 and not (op == "delete" and r.status_code == 404)):
                tally.problem(f"{op} {r.status_code}: {r.text}")


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, float]], started: float) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            samples.append((round(time.monotonic() - started, 2), process.memory_info().rss / 2**20))
        except psutil.Error:
            return
        stop.wait(1.0)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(values), "p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(1000 * ordered[-1], 1),
            "mean_ms": round(1000 * statistics.fmean(values), 1)}


async def drive(base: str, clients: int, seconds: float, ops: str, max_queue: int, seed: int,
                mixings: list[dict | None]) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(n, base, deadline, tally, random.Random(seed * 1000 + n), ops, max_queue,
                                       mixings) for n in range(clients)))
    return tally


def run_load(space: Path, folder: Path, clients: int, seconds: float, max_queue: int, ops: str, seed: int,
             warmup_s: float = 30.0, mixings: list[dict | None] = MIXINGS) -> dict[str, Any]:
    server = Server([str(space)], folder / "data", launcher="cli", log_path=folder / "server.log", max_queue=max_queue)
    with server:
        httpx.post(f"{server.base}/collections", json={"name": "load"}, timeout=30).raise_for_status()
        if ops == "reads":  # searches need something to find: the collection the mixed run would end with
            fill = random.Random(seed)
            for start in range(0, clients * POOL, 64):
                ids = range(start, min(start + 64, clients * POOL))
                items = [{"id": f"c{i % clients}-{i // clients}", **an_input(fill),
                          "metadata": {"n": fill.randint(0, 100)}} for i in ids]
                httpx.post(f"{server.base}/collections/load/items", json={"items": items},
                           timeout=60).raise_for_status()
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        started = time.monotonic()
        sampler = threading.Thread(target=sample_rss, args=(server.pid, stop, samples, started), daemon=True)
        sampler.start()
        tally = asyncio.run(drive(server.base, clients, seconds, ops, max_queue, seed, mixings))
        wall = time.monotonic() - started
        stop.set()
        sampler.join()
        metrics = httpx.get(f"{server.base}/metrics", timeout=30).text
        info = httpx.get(f"{server.base}/collections/load", timeout=30).json()
        ready = httpx.get(f"{server.base}/health/ready", timeout=30).status_code
    total = sum(tally.status.values())
    statuses = Counter()
    for (_, status), count in tally.status.items():
        statuses[str(status)] += count
    after = [rss for t, rss in samples if t >= warmup_s]
    early = [rss for t, rss in samples if warmup_s <= t < warmup_s + 30]
    late = [rss for t, rss in samples if t >= samples[-1][0] - 30] if samples else []
    slope = _slope([(t, rss) for t, rss in samples if t >= warmup_s])
    return {
        "clients": clients, "seconds": round(wall, 1), "max_queue": max_queue, "ops": ops,
        "requests": total, "requests_per_s": round(total / wall, 1),
        "statuses": dict(statuses), "by_op": {f"{op} {status}": c for (op, status), c in sorted(tally.status.items())},
        "latency": {op: percentiles(v) for op, v in sorted(tally.latency.items())},
        "retry_after": dict(tally.retry_after), "overloaded_with_full_queue": tally.overload_ok,
        "problems": tally.problems, "collection_count_at_end": info.get("count"), "ready_after": ready,
        "internal_errors": _metric(metrics, 'freebind_errors_total{type="internal"}'),
        "rss_mb": {"start": round(samples[0][1], 1) if samples else None,
                   "after_warmup_first_30s_median": round(statistics.median(early), 1) if early else None,
                   "last_30s_median": round(statistics.median(late), 1) if late else None,
                   "max": round(max(rss for _, rss in samples), 1) if samples else None,
                   "slope_after_warmup_mb_per_min": round(slope * 60, 2) if slope is not None else None,
                   "warmup_s": warmup_s, "samples": [[t, round(r, 2)] for t, r in samples]},
        "min_after_warmup": round(min(after), 1) if after else None,
    }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def plot(runs: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, run in runs.items():
        samples = run["rss_mb"]["samples"]
        ax.plot([t for t, _ in samples], [r for _, r in samples], label=f"{name} ({run['clients']} clients, "
                f"{run['requests_per_s']} req/s)")
        ax.axvline(run["rss_mb"]["warmup_s"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title("freebind serve resident memory under load (sampled every second)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, fontsize=8)  # below: the lines sit low
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "python": sys.version.split()[0]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of the main load run")
    parser.add_argument("--queue-duration", type=float, default=30.0, help="seconds of the small-queue run")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--trials", type=int, default=20, help="kill -9 trials")
    parser.add_argument("--skip", default="", help="comma list of phases to skip: load, reads, queue, crash")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    return parser.parse_args()


def server_errors(statuses: dict[str, int]) -> bool:
    """Whether any answer was a 5xx or no answer at all (-1)."""
    return any(int(s) >= 500 or s == "-1" for s in statuses)


def load_phase(args, space: Path, folder: Path, report: dict, runs: dict, failures: list[str]) -> None:
    """Mixed traffic on the tiny space with the default queue (then on starter_e5 where it is installed):
    no 5xx, no 429, no unexpected answer."""
    log.info("load: %d clients for %.0f s, default queue", args.clients, args.duration)
    run = runs["tiny space, default queue"] = run_load(space, folder / "load", args.clients, args.duration, 2048,
                                                       "mixed", seed=1)
    report["load"] = run
    log.info("load: %s",
             {k: run[k] for k in ("requests", "requests_per_s", "statuses", "rss_mb") if k != "samples"})
    if server_errors(run["statuses"]) or run["statuses"].get("429"):
        failures.append(f"load: statuses {run['statuses']}")
    if run["problems"]:
        failures.append(f"load: unexpected answers, e.g. {run['problems'][:3]}")
    starter = REPO / "bonds" / "spaces" / "starter_e5.yaml"
    if starter.is_file():
        log.info("load: the starter space")
        # mixings=[None]: the tiny space's mixings name its bond
        run = runs["starter_e5"] = run_load(starter, folder / "starter", args.clients, args.duration / 2, 2048,
                                           "mixed", seed=2, mixings=[None])
        report["load_starter"] = run
        if server_errors(run["statuses"]):
            failures.append(f"starter load: statuses {run['statuses']}, e.g. {run['problems'][:3]}")


def reads_phase(args, space: Path, folder: Path, report: dict, runs: dict, failures: list[str]) -> None:
    """Embed and search only, on a filled collection."""
    log.info("reads: %d clients for %.0f s, embed and search only, on a filled collection", args.clients,
             args.duration)
    run = runs["embed + search only"] = run_load(space, folder / "reads", args.clients, args.duration, 2048,
                                                 "reads", seed=4)
    report["reads"] = run
    if server_errors(run["statuses"]) or run["statuses"].get("429") or run["problems"]:
        failures.append(f"reads: statuses {run['statuses']}, e.g. {run['problems'][:3]}")


def queue_phase(args, space: Path, folder: Path, report: dict, failures: list[str]) -> None:
    """A queue of 8: every 429 comes with a full queue and Retry-After: 1, and nothing else fails."""
    log.info("back-pressure: %d clients, FREEBIND_MAX_QUEUE=8, %.0f s", args.clients, args.queue_duration)
    run = run_load(space, folder / "queue", args.clients, args.queue_duration, 8, "embed", seed=3, warmup_s=5)
    report["small_queue"] = run
    ok = run["statuses"].get("429", 0) > 0 and run["overloaded_with_full_queue"] == run["statuses"].get("429", 0)
    if not ok or set(run["retry_after"]) != {"1"} or server_errors(run["statuses"]):
        failures.append(f"small queue: statuses {run['statuses']}, retry-after {run['retry_after']}, "
                        f"problems {run['problems'][:3]}")


def crash_phase(args, space: Path, folder: Path, report: dict, failures: list[str]) -> None:
    """kill -9 trials against `freebind serve` while writers ingest (harness.crash)."""
    log.info("crash: %d kill -9 trials against freebind serve", args.trials)
    started = time.monotonic()
    try:
        trials = run_trials(space, folder / "crash" / "data", trials=args.trials, launcher="cli", writers=8,
                            kill_after_acks=(5, 120), seed=20, log=lambda r: log.info("crash: %s", r))
        report["crash"] = {"trials": [t.__dict__ for t in trials], "seconds": round(time.monotonic() - started, 1)}
    except AssertionError as exc:
        failures.append(f"crash: {exc}")
        report["crash"] = {"failed": str(exc)[:2000]}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    skip = set(filter(None, args.skip.split(",")))
    folder = Path(tempfile.mkdtemp(prefix="freebind-soak-"))
    space = write_space(folder / "space")
    report: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    failures: list[str] = []
    runs: dict[str, dict[str, Any]] = {}
    if "load" not in skip:
        load_phase(args, space, folder, report, runs, failures)
    if "reads" not in skip:
        reads_phase(args, space, folder, report, runs, failures)
    if "queue" not in skip:
        queue_phase(args, space, folder, report, failures)
    if "crash" not in skip:
        crash_phase(args, space, folder, report, failures)
    report["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["failures"] = failures
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reliability_soak.json").write_text(json.dumps(report, indent=1))
    if runs:
        plot(runs, args.out / "reliability_rss.png")
    log.info("wrote %s; failures: %s", args.out / "reliability_soak.json", failures or "none")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
