"""Start a real `freebind serve` process on loopback for end-to-end tests, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
FREEBIND = Path(sys.executable).parent / "freebind"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(spaces: list[str], data_dir: Path, ready_timeout: float = 300, **env_settings: str):
    port = free_port()
    command = [str(FREEBIND), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    for space in spaces:
        command += ["--space", space]
    env = {**os.environ, **{f"FREEBIND_{k.upper()}": v for k, v in env_settings.items()}}
    log = open(data_dir.parent / f"server-{port}.log", "wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}: {Path(log.name).read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready after {ready_timeout}s: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.3)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
