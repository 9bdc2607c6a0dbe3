"""Access: API keys on every route but health and the playground, compared in constant time and never
logged; body limits enforced before anything reads (let alone parses) the body.

Routes are enumerated from the app itself, so a route added later is covered without touching this file.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import logging
import re
import select
import socket
import textwrap
import time

import httpx
import pytest
from starlette.routing import Mount

import service.deps
from harness.servers import Server
from service.deps import require_api_key

PROBLEM = "application/problem+json"
KEYS = ["fb-key-alpha-7f3a9c", "fb-key-beta-2d8e41"]
WRONG = "fb-key-wrong-000000"
# What stays open with keys configured: health for orchestrators, the playground page and its files, and
# the favicon, FastAPI's schema and documentation pages and their assets (they describe the API; they hold no data).
PUBLIC = re.compile(r"^(/health/.*|/|/static.*|/playground/.*|/favicon\.(ico|svg)|/openapi\.json|/docs.*|/redoc)$")


def routes(app):
    """(path, route) of every route, routers included with `include_router` flattened (newer FastAPI keeps
    them as included-router entries whose contexts hold the full paths)."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            yield from ((context.path, context.original_route) for context in contexts())
        else:
            yield route.path, route


def endpoints(app) -> list[tuple[str, str]]:
    """(method, concrete path) of every route of `app`, path parameters filled in."""
    out = []
    for template, route in routes(app):
        path = re.sub(r"\{[^}]+\}", "x", template)
        if isinstance(route, Mount):
            out.append(("GET", f"{path}/app.js"))
            continue
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        out += [(m, path) for m in methods if m not in ("HEAD", "OPTIONS")]
    return out


def test_every_route_but_health_and_the_playground_needs_a_valid_key(make_client):
    client = make_client(api_keys=KEYS)
    routes = endpoints(client.app)
    guarded = [(m, p) for m, p in routes if not PUBLIC.match(p)]
    assert len(guarded) >= 15 and ("POST", "/embed") in guarded and ("DELETE", "/collections/x/items/x") in guarded
    bad_headers = [{}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": KEYS[0]}, {"Authorization": "Bearer "},
                   {"Authorization": f"Basic {KEYS[0]}"}, {"Authorization": f"Bearer {KEYS[0]}x"}]
    for method, path in guarded:
        for headers in bad_headers:
            r = client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.headers["content-type"] == PROBLEM and r.headers["www-authenticate"] == "Bearer"
            body = r.json()
            assert body["status"] == 401 and body["type"].endswith("auth") and "api key" in body["detail"].lower()
        for key in KEYS:  # a valid key gets past the check (the request itself may still be wrong)
            r = client.request(method, path, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code != 401, (method, path)
    for method, path in routes:
        if PUBLIC.match(path):
            assert client.request(method, path).status_code != 401, path
    assert client.get("/health/ready").status_code == 200


def test_the_enumeration_covers_every_documented_operation(make_client):
    app = make_client().app
    found = set(endpoints(app))
    documented = {(m.upper(), re.sub(r"\{[^}]+\}", "x", p)) for p, ms in app.openapi()["paths"].items() for m in ms}
    assert documented <= found and ("GET", "/") in found and ("GET", "/static/app.js") in found


def test_keys_are_compared_in_constant_time_against_every_key(make_client, monkeypatch):
    source = inspect.getsource(require_api_key)
    assert "hmac.compare_digest" in source
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):  # no ==, != or `in` touches what the client sent
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & {"given", "offered"}, ast.unparse(node)
    seen = []
    real = service.deps.hmac.compare_digest

    def spy(a, b):
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(service.deps.hmac, "compare_digest", spy)
    client = make_client(api_keys=[*KEYS, "fb-key-gamma-55aa00"])
    assert client.get("/spaces", headers={"Authorization": f"Bearer {KEYS[0]}"}).status_code == 200
    assert len(seen) == 3  # no early exit at the first (matching) key
    seen.clear()
    assert client.get("/spaces", headers={"Authorization": f"Bearer {WRONG}"}).status_code == 401
    assert len(seen) == 3


def test_keys_never_reach_logs_responses_or_settings_repr(make_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(api_keys=KEYS, log_level="debug")
    for key in (WRONG, *KEYS):
        headers = {"Authorization": f"Bearer {key}"}
        texts = [client.post("/embed", json={"inputs": ["x"]}, headers=headers).text,
                 client.get("/nope", headers=headers).text,
                 client.post("/embed", content=b"{bad", headers={**headers, "content-type": "application/json"}).text]
        texts.append(client.get("/metrics", headers={"Authorization": f"Bearer {KEYS[0]}"}).text)
        texts.append(client.get("/health/ready").text)
        assert not any(k in t for t in texts for k in (*KEYS, WRONG))
    logged = caplog.text
    assert not any(k in logged for k in (*KEYS, WRONG))
    assert not any(k in repr(client.app.state.settings) or k in str(client.app.state.settings) for k in KEYS)


def test_a_real_server_logs_no_key(space_file, tmp_path):
    """`freebind serve`'s own logging (uvicorn access log at debug level included) with keys configured."""
    log = tmp_path / "server.log"
    with Server([str(space_file)], tmp_path / "data", launcher="fork", log_path=log, api_keys=",".join(KEYS),
                log_level="debug") as server:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            for key in (WRONG, *KEYS):
                http.post("/embed", json={"inputs": ["x"]}, headers={"Authorization": f"Bearer {key}"})
                http.get("/spaces", headers={"Authorization": key})
            assert http.get("/spaces").status_code == 401
    text = log.read_text()
    assert "GET /spaces" in text and "POST /embed" in text  # the access log was on
    assert not any(k in text for k in (*KEYS, WRONG))


# --- body limits ------------------------------------------------------------------------------------------
def body_routes(app) -> list[str]:
    return sorted({path for method, path in endpoints(app) if method in ("POST", "PUT", "PATCH")})


MULTIPART = b"multipart/form-data; boundary=xyz"
PART = b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'


def call(client, path: str, headers: list[tuple[bytes, bytes]], chunks) -> tuple[int, int, int]:
    """Drive the ASGI app directly: (status, body chunks the app pulled, bytes it pulled)."""
    pulled = [0, 0]
    status = [0]

    async def receive():
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled[0] += 1
        pulled[1] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), *headers],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    client.portal.call(client.app, scope, receive, send)
    return status[0], pulled[0], pulled[1]


def content_type(path: str) -> bytes:
    return MULTIPART if path.endswith("/upload") else b"application/json"


def test_declared_length_over_the_limit_is_refused_before_any_read(make_client):
    client = make_client(max_body_bytes=1_000_000)
    for path in body_routes(client.app):
        endless = iter(lambda: b"x" * 65536, None)
        headers = [(b"content-type", content_type(path)), (b"content-length", str(10**12).encode())]
        status, chunks, _ = call(client, path, headers, endless)
        assert (status, chunks) == (413, 0), path


def test_streamed_body_over_the_limit_is_cut_off_where_it_crosses(make_client):
    client = make_client(max_body_bytes=1_000_000)
    assert client.post("/collections", json={"name": "x"}).status_code == 201  # so /collections/x/items reads
    for path in body_routes(client.app):
        first = [PART] if content_type(path) == MULTIPART else []
        endless = itertools.chain(first, iter(lambda: b"[" * 65536, None))  # endless unless something stops reading
        status, chunks, pulled = call(client, path, [(b"content-type", content_type(path))], endless)
        assert status == 413, path
        assert pulled <= 1_000_000 + 65536, (path, pulled)  # the chunk that crossed the limit is the last read


def test_the_key_is_checked_before_any_byte_of_the_body_is_read(make_client):
    """Issue 19: FastAPI parses a JSON body before a route's dependencies run, so the key check as one let a
    caller without a key make the server parse 30 MB and read its validation errors."""
    client = make_client(api_keys=KEYS)
    for path in [*body_routes(client.app), "/no/such/route"]:
        endless = iter(lambda: b"[" * 65536, None)
        status, chunks, _ = call(client, path, [(b"content-type", content_type(path))], endless)
        assert (status, chunks) == (401, 0), path
    r = client.post("/embed", content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert r.status_code == 401 and "json" not in r.json()["detail"].lower()
    r = client.post("/embed", json={"inputs": ["x"]}, headers={"Authorization": f"Bearer {KEYS[1]}"})
    assert r.status_code == 200


def _response_status(sock: socket.socket, wait: float) -> int | None:
    if not select.select([sock], [], [], wait)[0]:
        return None
    head = sock.recv(65536)
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else -1


def test_a_real_server_refuses_big_bodies_without_receiving_them(space_file, tmp_path):
    limit = 1_000_000
    with Server([str(space_file)], tmp_path / "data", launcher="fork", max_body_bytes=limit) as server:
        head = "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        with socket.create_connection(("127.0.0.1", server.port)) as sock:  # declares 1 TB, sends 10 bytes
            sock.sendall(f"{head}Content-Length: {10**12}\r\n\r\n".encode() + b'{"inputs":')
            assert _response_status(sock, 10) == 413
        with socket.create_connection(("127.0.0.1", server.port)) as sock:  # chunked, no declared length
            sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            sock.setblocking(False)
            chunk = b"10000\r\n" + b"[" * 0x10000 + b"\r\n"
            sent, pending, status, deadline = 0, b"", None, time.monotonic() + 60
            while status is None and sent < 200 * limit and time.monotonic() < deadline:
                pending = pending or chunk  # partial sends continue the same chunk: framing stays valid
                try:
                    n = sock.send(pending)
                    sent, pending = sent + n, pending[n:]
                except BlockingIOError:
                    pass
                except OSError:  # the server answered and closed the connection
                    sock.setblocking(True)
                    status = _response_status(sock, 5)
                    break
                status = _response_status(sock, 0.01)
            assert status == 413, (status, sent)
            assert sent < 50 * limit  # refused long before the client was done (socket buffers hold the rest)
        assert httpx.get(f"{server.base}/health/ready").status_code == 200


@pytest.mark.parametrize("size", [1_000_000, 1_000_001])
def test_the_limit_is_exact(make_client, size):
    client = make_client(max_body_bytes=1_000_000, max_text_chars=2_000_000)
    body = b'{"inputs": ["' + b"a" * (size - 16) + b'"]}'
    assert len(body) == size
    r = client.post("/embed", content=body, headers={"content-type": "application/json"})
    assert r.status_code == (200 if size <= 1_000_000 else 413)
