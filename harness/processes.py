"""Real server processes on loopback: `freebind serve` for end-to-end tests, and the start/ready/stop
steps every real-process harness shares (harness/servers.py and bench/servers.py use them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
FREEBIND = Path(sys.executable).parent / "freebind"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(url: str, alive: Callable[[], bool], log_tail: Callable[[], str], timeout: float,
                     poll: float = 0.3) -> None:
    """Poll GET `url` until it answers 200; fail at once, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise RuntimeError(f"server exited: {log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not ready after {timeout}s: {log_tail()}")
        time.sleep(poll)


@contextmanager
def running_process(command: list[str], ready_url: str, log_path: Path, env: dict[str, str] | None = None,
                    ready_timeout: float = 300) -> Iterator[subprocess.Popen]:
    """Start `command` (output to `log_path`), wait until `ready_url` answers 200, stop it on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            wait_until_ready(ready_url, lambda: process.poll() is None,
                             lambda: log_path.read_text(errors="replace")[-3000:], ready_timeout)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def running_server(spaces: list[str], data_dir: Path, ready_timeout: float = 300, **env_settings: str):
    """`freebind serve` of `spaces` on `data_dir`; yields (base URL, process). Settings become FREEBIND_*."""
    port = free_port()
    command = [str(FREEBIND), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    for space in spaces:
        command += ["--space", space]
    env = {f"FREEBIND_{k.upper()}": v for k, v in env_settings.items()}
    base = f"http://127.0.0.1:{port}"
    with running_process(command, f"{base}/health/ready", data_dir.parent / f"server-{port}.log", env,
                         ready_timeout) as process:
        yield base, process
