"""Real servers on loopback to kill, restart and load (the tests and bench/soak.py serve harness.tiny_space).

`Server` starts `freebind serve` (the real CLI, `launcher="cli"`) or the same app and uvicorn call in a
process forked from a forkserver that has imported the service already (`launcher="fork"`: a start in
well under a second instead of the CLI's torch import), stops it, or kills it with SIGKILL. An upstream
that trickles its answer tests URL inputs (`trickling_upstream`).
"""

from __future__ import annotations

import http.server
import multiprocessing
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from harness.processes import FREEBIND, REPO, free_port, wait_until_ready


def _serve_forked(env: dict[str, str], port: int, log_path: str) -> None:
    """Child of the forkserver: what `freebind serve` does, logging to `log_path`."""
    import logging

    from service.cli import run_server
    from service.settings import get_settings

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    settings = get_settings(host="127.0.0.1", port=port)
    logging.basicConfig(level=settings.log_level.upper())
    run_server(settings)


_FORK: multiprocessing.context.BaseContext | None = None


def _fork_context() -> multiprocessing.context.BaseContext:
    global _FORK
    if _FORK is None:
        _FORK = multiprocessing.get_context("forkserver")
        _FORK.set_forkserver_preload(["service.app", "service.cli", "uvicorn", "harness.servers"])
    return _FORK


class Server:
    """One server process on 127.0.0.1 serving `spaces` from `data_dir`; settings as `FREEBIND_*`."""

    def __init__(self, spaces: list[str], data_dir: Path, launcher: str = "cli", log_path: Path | None = None,
                 **settings: Any):
        self.spaces, self.data_dir, self.launcher = spaces, Path(data_dir), launcher
        self.settings = {k: str(v) for k, v in settings.items()}
        self.log_path = log_path or self.data_dir.parent / "server.log"
        self.port = 0
        self.process: Any = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        env = {f"FREEBIND_{k.upper()}": v for k, v in self.settings.items()}
        env["FREEBIND_SPACES"] = ",".join(self.spaces)
        env["FREEBIND_DATA_DIR"] = str(self.data_dir)
        return env

    def start(self, ready_timeout: float = 300) -> Server:
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.launcher == "cli":
            command = [str(FREEBIND), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **self.env()}, stdout=log,
                                            stderr=subprocess.STDOUT)
            log.close()
        else:
            self.process = _fork_context().Process(target=_serve_forked, args=(self.env(), self.port,
                                                                                 str(self.log_path)), daemon=True)
            self.process.start()
        self.wait_ready(ready_timeout)
        return self

    def running(self) -> bool:
        if self.process is None:
            return False
        return self.process.poll() is None if self.launcher == "cli" else self.process.is_alive()

    def wait_ready(self, timeout: float) -> None:
        wait_until_ready(f"{self.base}/health/ready", self.running, self.log_tail, timeout, poll=0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no snapshot, no flush runs."""
        os.kill(self.pid, signal.SIGKILL)
        self._reap(10)

    def stop(self) -> None:
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            if not self._reap(20):
                os.kill(self.pid, signal.SIGKILL)
                self._reap(10)

    def _reap(self, timeout: float) -> bool:
        if self.launcher == "cli":
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        self.process.join(timeout)
        return not self.process.is_alive()

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def trickling_upstream(interval: float, stop: threading.Event,
                       arrived: threading.Event | None = None) -> tuple[http.server.ThreadingHTTPServer, str]:
    """An upstream for URL inputs that answers 200 and then one byte every `interval` s until `stop` is set
    (sets `arrived` when a fetch comes in): the server (`shutdown()` it) and its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if arrived is not None:
                arrived.set()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            while not stop.wait(interval):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:  # the fetcher hung up
                    return

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/slow.png"
