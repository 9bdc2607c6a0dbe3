"""Idle keep-alive connections: a real server keeps them for `keep_alive_s`, not uvicorn's 5 s default.

A client pool or load balancer that reuses a connection the server has just closed gets a disconnect
instead of an answer (the benchmark's load generator hit exactly that at 64 clients), so the server's
idle timeout must outlast theirs.
"""

from __future__ import annotations

import socket
import time

from harness.servers import Server

REQUEST = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"


def _answered(sock: socket.socket) -> bool:
    """Send one request on `sock`; True if an HTTP answer came back, False if the server had closed it."""
    try:
        sock.sendall(REQUEST)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _content_length(answer):
            chunk = sock.recv(4096)  # head and body may come in separate packets: read the whole answer
            if not chunk:
                return False
            answer += chunk
    except (BrokenPipeError, ConnectionResetError):
        return False
    return answer.startswith(b"HTTP/1.1 200")


def _content_length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""  # orderly close by the server
    except TimeoutError:
        return False


def test_idle_connections_outlive_uvicorns_default_and_close_when_configured(space_file, tmp_path):
    with Server([str(space_file)], tmp_path / "data-default", launcher="fork") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            assert _answered(sock)
            assert not _closed_within(sock, 6.5)  # past uvicorn's 5 s: still open under the default (75 s)
            assert _answered(sock)
    with Server([str(space_file)], tmp_path / "data-short", launcher="fork", keep_alive_s=1) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            assert _answered(sock)
            started = time.monotonic()
            assert _closed_within(sock, 6.0)
            assert time.monotonic() - started < 4.0  # the configured 1 s, not the default
