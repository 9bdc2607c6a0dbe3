"""URL inputs: http(s) fetches with a hard total deadline, on threads of their own.

Only http(s) through a connection that refuses loopback, private, link-local and other non-public
addresses (checked on the resolved addresses of every hop, so a redirect or a DNS name cannot lead there
either), no proxies from the environment, at most `url_max_bytes`.

The deadline (`url_timeout_s`) is the fetch's whole time. A socket timeout bounds one read, not all of
them: an upstream sending a byte every 2 s never tripped a 10 s timeout, and `read(65536)` waited for all
65536 bytes (a 30-byte trickle was answered after 60 s). A timer now shuts the fetch's socket when the
deadline passes, whatever the fetch is waiting for; only DNS resolution cannot be cut short (the fetch
fails as soon as it returns).

Fetches run on the `Fetcher`'s own threads (`url_max_fetches`), never on the pool that decoding and
search share: 32 slow upstreams used to hold 32 of its threads. Waiting for a fetch thread counts
against the fetch's deadline, and the caller is answered at the deadline even while a thread is still
stuck in DNS.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bonds.errors import FreeBindError, MediaTooLargeError
from service.errors import InvalidInput
from service.settings import Settings


class Deadline:
    """Shuts the socket a fetch is using once `seconds` have passed (from a timer thread)."""

    def __init__(self, seconds: float):
        self.seconds, self.expired = seconds, False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disarm()

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("the fetch's deadline passed")
            self._sock = sock
        return sock

    def disarm(self) -> None:
        """Before the socket is closed: its descriptor may belong to another connection afterwards."""
        self._timer.cancel()
        with self._lock:
            self._sock = None

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                try:  # the plain socket's shutdown: wakes a thread blocked reading, TLS or not
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def error(self) -> InvalidInput:
        return InvalidInput(f"fetching the URL took longer than {self.seconds:g} s (FREEBIND_URL_TIMEOUT_S)")


def _public_only(address: tuple[str, int], timeout: float | None, source_address=None) -> socket.socket:
    """`socket.create_connection` that refuses any host whose addresses include a non-public one."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        ip = getattr(ip, "ipv4_mapped", None) or ip
        if not ip.is_global or ip.is_multicast:
            raise InvalidInput(f"URL host {host!r} resolves to a non-public address; refused")
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"cannot connect to {host}")


def _connections(allow_private: bool, deadline: Deadline) -> tuple[type, type]:
    """HTTP and HTTPS connections that open sockets through the address guard and under `deadline`."""
    opener = socket.create_connection if allow_private else _public_only

    class HTTP(http.client.HTTPConnection):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._create_connection = lambda *a, **kw: deadline.watch(opener(*a, **kw))  # http.client's hook

    class HTTPS(http.client.HTTPSConnection):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._create_connection = lambda *a, **kw: deadline.watch(opener(*a, **kw))

        def connect(self) -> None:
            """HTTPSConnection.connect with the handshake under the deadline too (no proxy tunnels here)."""
            http.client.HTTPConnection.connect(self)
            self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
            deadline.watch(self.sock)
            self.sock.do_handshake()

    return HTTP, HTTPS


def _opener(allow_private: bool, deadline: Deadline) -> urllib.request.OpenerDirector:
    """Only http(s), no proxies from the environment, no file:/ftp: (a redirect cannot reach them)."""
    plain, tls = _connections(allow_private, deadline)

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(plain, req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(tls, req, context=self._context)

    opener = urllib.request.OpenerDirector()
    for handler in (HTTP(), HTTPS(), urllib.request.HTTPRedirectHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def fetch(url: str, settings: Settings) -> bytes:
    """The body at `url` within `url_timeout_s` in all and `url_max_bytes`; blocks the calling thread."""
    request = urllib.request.Request(url, headers={"User-Agent": "freebind"})
    with Deadline(settings.url_timeout_s) as deadline:
        try:
            response = _opener(settings.allow_private_urls, deadline).open(request, timeout=settings.url_timeout_s)
            try:
                body = _body(response, settings.url_max_bytes)
            finally:
                deadline.disarm()
                response.close()
            if deadline.expired:  # the socket shut under a read looks like the end of the body
                raise deadline.error()
            return body
        except FreeBindError:
            raise
        except Exception as exc:
            raise deadline.error() if deadline.expired else _failure(exc) from None


def _body(response: http.client.HTTPResponse, limit: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise MediaTooLargeError(f"URL body is {declared} bytes; the limit is {limit} (FREEBIND_URL_MAX_BYTES)")
    chunks, size = [], 0
    while chunk := response.read1(65536):  # what has arrived, not a wait for 65536 bytes
        size += len(chunk)
        if size > limit:
            raise MediaTooLargeError(f"URL body exceeds {limit} bytes (FREEBIND_URL_MAX_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def _failure(exc: Exception) -> FreeBindError:
    if isinstance(exc, urllib.error.HTTPError):
        return InvalidInput(f"fetching the URL failed: HTTP {exc.code}")
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, FreeBindError):  # the address guard's refusal, raised inside urllib
            return exc.reason
        reason = exc.reason if isinstance(exc.reason, str) else type(exc.reason).__name__
        return InvalidInput(f"fetching the URL failed: {reason}")
    return InvalidInput(f"fetching the URL failed: {type(exc).__name__}")


class Fetcher:
    """`fetch` on `url_max_fetches` threads of its own, the caller answered at the deadline at the latest."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pool = ThreadPoolExecutor(settings.url_max_fetches, thread_name_prefix="url-fetch")

    async def fetch(self, url: str) -> bytes:
        running = asyncio.get_running_loop().run_in_executor(self._pool, fetch, url, self.settings)
        try:  # the thread's own deadline ends it; this one answers while a thread is stuck in DNS
            return await asyncio.wait_for(running, self.settings.url_timeout_s + 0.5)
        except TimeoutError:
            raise Deadline(self.settings.url_timeout_s).error() from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
