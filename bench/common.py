"""What every benchmark part shares: paths, the machine's description, results on disk, timing helpers.

A part's result is one JSON file `docs/bench/<part>.json` holding its figures, the machine it ran on,
the load of that machine before and after, the command and the git commit; `bench.report` writes
docs/benchmarks.md from whatever JSON files are there, so one part can be re-run alone.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "bench"
CACHE = REPO / ".bench-cache"  # gitignored: embeddings, collections and server logs made while benchmarking
SPACES = Path(__file__).resolve().parent / "spaces"
log = logging.getLogger("bench")


def shared_data() -> Path:
    """The shared data folder (`BENCH_DATA`, default ../shared/data beside the repository)."""
    return Path(os.environ.get("BENCH_DATA", REPO.parent / "shared" / "data"))


def quick() -> bool:
    """`BENCH_QUICK=1`: tiny sizes, to check that the code runs; figures are then meaningless."""
    return os.environ.get("BENCH_QUICK", "0") == "1"


# --- the machine ----------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def machine() -> dict[str, Any]:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none lent to this run"
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(), "gpu": gpu,
            "os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "commit": commit or "unknown"}


def load() -> dict[str, Any]:
    """Load average and the busiest other processes: figures taken under load are not trustworthy."""
    mine = {os.getpid(), os.getppid()}
    out = subprocess.run(["ps", "-eo", "pid,pcpu,rss,args", "--sort=-pcpu", "--no-headers"], capture_output=True,
                         text=True).stdout
    busy = []
    for line in out.splitlines():
        pid, cpu, rss, args = line.split(None, 3)
        if int(pid) not in mine and float(cpu) >= 5.0:
            busy.append(
                {"pid": int(pid), "cpu_percent": float(cpu), "rss_mib": int(rss) // 1024, "command": args[:100]})
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "busy": busy[:5]}


# --- results --------------------------------------------------------------------------------------
def save(part: str, figures: dict[str, Any], started: float, load_before: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"part": part, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": round(time.time() - started, 1),
              "command": f"make bench PARTS={part}", "quick": quick(), "machine": machine(),
              "load_before": load_before, "load_after": load(), **figures}
    path = RESULTS / f"{part}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    log.info("wrote %s", path.relative_to(REPO))
    return path


def read(part: str) -> dict[str, Any] | None:
    path = RESULTS / f"{part}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig, name: str) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    pyplot().close(fig)
    return f"bench/{name}.png"


# --- inputs ---------------------------------------------------------------------------------------
def captions(lang: str = "en", start: int = 0, stop: int | None = None) -> list[str]:
    """Multi30k training captions (line i of each language translates line i of the others)."""
    path = shared_data() / "text" / "multi30k" / f"train.{lang}.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    return lines[start:stop]


# --- measuring ------------------------------------------------------------------------------------
def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    if ms.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class PeakRSS:
    """Peak resident memory of a process while the block runs, sampled every `every` seconds."""

    pid: int | str = "self"
    every: float = 0.02
    peak: int = 0
    before: int = 0

    def __enter__(self) -> PeakRSS:
        self.before = self.peak = rss_bytes(self.pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "faster_whisper"):  # a line per readiness poll, per transcribed clip
        logging.getLogger(noisy).setLevel(logging.WARNING)
