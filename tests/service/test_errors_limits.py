"""Problems, request ids, body limits, API keys, back-pressure, URL inputs, and the batcher on its own."""

from __future__ import annotations

import asyncio
import base64
import http.server
import logging
import threading
import time

import anyio
import numpy as np
import pytest

from bonds.encoders.base import Encoded
from bonds.errors import MediaError
from harness.servers import trickling_upstream
from service.batcher import Batcher
from service.errors import Overloaded
from tests.service.conftest import png_bytes

PROBLEM = "application/problem+json"


# --- problems and request ids -------------------------------------------------------------------------
def test_routing_and_validation_errors_are_problems(client):
    for response, status in ((client.get("/nope"), 404), (client.get("/embed"), 405),
                             (client.post("/embed", json={"inputs": "not a list"}), 422),
                             (client.post("/embed", content=b"{broken", headers={"content-type": "application/json"}),
                              422)):
        assert response.status_code == status and response.headers["content-type"] == PROBLEM
        body = response.json()
        assert body["status"] == status and body["title"] and body["detail"] and body["request_id"]
    missing = client.post("/embed", json={}).json()
    assert missing["type"].endswith("validation_error") and missing["errors"][0]["loc"] == ["body", "inputs"]


def test_request_ids_are_echoed_or_made(client):
    assert client.get("/health/live", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert made != "bad id\twith spaces" and len(made) == 32


def test_unexpected_errors_are_a_generic_500_with_the_traceback_logged(client, monkeypatch, caplog):
    async def explode(*args, **kwargs):
        raise RuntimeError("connection string postgres://admin:hunter2@db")

    monkeypatch.setattr(client.app.state.engine, "embed_inputs", explode)
    r = client.post("/embed", json={"inputs": ["x"]}, headers={"X-Request-ID": "req-42"})
    assert r.status_code == 500 and r.headers["content-type"] == PROBLEM
    assert "hunter2" not in r.text and "RuntimeError" not in r.text
    assert r.json()["request_id"] == "req-42" and "req-42" in r.json()["detail"]
    assert "hunter2" in caplog.text and "Traceback" in caplog.text and "req-42" in caplog.text
    assert 'freebind_errors_total{type="internal"} 1.0' in client.get("/metrics").text


# --- body limit ---------------------------------------------------------------------------------------
def test_body_limit_by_content_length_comes_before_parsing(make_client):
    client = make_client(max_body_bytes=1000)
    r = client.post("/embed", content=b"{" * 2000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM  # not 422: the JSON was never parsed
    assert r.json()["type"].endswith("payload_too_large") and r.headers["x-request-id"]
    r = client.post("/embed/upload", files=[("files", ("a.png", b"\0" * 2000, "image/png"))])
    assert r.status_code == 413
    assert client.post("/embed", json={"inputs": ["small"]}).status_code == 200


def test_body_limit_counts_streamed_chunks(make_client):
    client = make_client(max_body_bytes=1000)

    def chunks():  # no Content-Length: chunked transfer
        yield b'{"inputs": ["'
        for _ in range(30):
            yield b"x" * 100
        yield b'"]}'

    r = client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["type"].endswith("payload_too_large")


# --- API keys -----------------------------------------------------------------------------------------
def test_api_keys_guard_every_route_but_health(make_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(api_keys=["k-one", "k-two"])
    routes = [("POST", "/embed", {"inputs": ["x"]}), ("POST", "/v1/embeddings", {"input": "x"}),
              ("GET", "/spaces", None),
              ("GET", "/metrics", None), ("GET", "/collections", None)]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "k-one"}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, headers)
        assert client.request(method, path, json=body, headers={"Authorization": "Bearer k-two"}).status_code == 200
    assert client.get("/health/live").status_code == client.get("/health/ready").status_code == 200
    assert "k-one" not in caplog.text and "k-two" not in caplog.text
    assert "k-one" not in repr(client.app.state.settings)


# --- back-pressure ------------------------------------------------------------------------------------
def test_overload_is_a_429_with_retry_after(make_client):
    client = make_client(max_queue=4, max_items=10, retry_after_s=3)
    assert client.post("/embed", json={"inputs": ["x"] * 5}).status_code == 413  # could never be admitted
    engine = client.app.state.engine
    engine._in_flight = 3  # as if other requests held 3 of the 4 permits
    r = client.post("/embed", json={"inputs": ["x", "y"]})
    assert r.status_code == 429 and r.headers["retry-after"] == "3" and r.json()["type"].endswith("overloaded")
    assert client.post("/embed", json={"inputs": ["x"]}).status_code == 200
    engine._in_flight = 0


def test_a_full_disk_is_a_507_problem_and_the_collection_stays_whole(make_client, tmp_path, caplog):
    """Issue 19, D9: a full disk answered 500 "internal" (and a second error from ROLLBACK in the log)."""
    client = make_client()
    assert client.post("/collections", json={"name": "x"}).status_code == 201
    assert client.post("/collections/x/items", json={"items": [{"id": "kept", "text": "a dog"}]}).status_code == 200
    conn = client.app.state.store.get("x")._conn
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")  # SQLITE_FULL
    items = [{"id": f"big{i}", "text": "x", "metadata": {"blob": "y" * 12_000}} for i in range(20)]
    r = client.post("/collections/x/items", json={"items": items})
    assert r.status_code == 507 and r.headers["content-type"] == PROBLEM and "disk is full" in r.json()["detail"]
    assert client.get("/collections/x").json()["count"] == 1 and "ROLLBACK" not in caplog.text
    assert 'freebind_errors_total{type="internal"}' not in client.get("/metrics").text


# --- URL inputs ---------------------------------------------------------------------------------------
@pytest.fixture
def local_server():
    payload = png_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/a.png"
    server.shutdown()


def test_url_inputs_off_by_default_and_never_to_private_addresses(make_client, local_server):
    assert make_client().post("/embed", json={"inputs": [{"image": local_server}]}).status_code == 422
    guarded = make_client(allow_urls=True).post("/embed", json={"inputs": ["x", {"image": local_server}]})
    assert guarded.status_code == 422 and guarded.json()["index"] == 1 and "non-public" in guarded.json()["detail"]
    open_ = make_client(allow_urls=True, allow_private_urls=True)
    assert open_.post("/embed", json={"inputs": [{"image": local_server}]}).json()["data"][0]["modality"] == "image"
    capped = make_client(allow_urls=True, allow_private_urls=True, url_max_bytes=10)
    assert capped.post("/embed", json={"inputs": [{"image": local_server}]}).status_code == 413
    schemes = make_client(allow_urls=True).post("/embed", json={"inputs": [{"image": "file:///etc/passwd"}]})
    assert schemes.status_code == 422


@pytest.fixture
def trickle_server():
    """An upstream that sends one byte every 0.2 s until `stop` is set (never, unless a test says so): its
    URL, the event set when a fetch arrives, and `stop`."""
    arrived, stop = threading.Event(), threading.Event()
    server, url = trickling_upstream(0.2, stop, arrived)
    yield url, arrived, stop
    stop.set()
    server.shutdown()


def in_thread(call) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(response=call()), daemon=True)
    thread.start()
    return thread, out


def test_a_trickling_upstream_is_cut_off_at_the_fetch_deadline(make_client, trickle_server):
    """Issue 19, D8: a byte every 2 s never tripped the 10 s socket timeout; the answer came after 60 s, when
    the upstream stopped. Here the upstream never stops: only a deadline over the whole fetch ends it."""
    url, _, _ = trickle_server
    client = make_client(allow_urls=True, allow_private_urls=True, url_timeout_s=1)
    thread, out = in_thread(lambda: client.post("/embed", json={"inputs": ["x", {"image": url}]}))
    thread.join(30)
    assert not thread.is_alive(), "the fetch was never cut off"
    r = out["response"]
    assert r.status_code == 422 and r.json()["index"] == 1 and "took longer than 1 s" in r.json()["detail"]


def test_fetches_never_hold_the_threads_decoding_and_search_share(make_client, trickle_server):
    """With the shared pool down to one thread, an image decodes while a URL fetch is stuck upstream."""
    url, arrived, stop = trickle_server
    client = make_client(allow_urls=True, allow_private_urls=True, url_timeout_s=60)
    client.portal.call(lambda: setattr(anyio.to_thread.current_default_thread_limiter(), "total_tokens", 1))
    stuck, _ = in_thread(lambda: client.post("/embed", json={"inputs": [{"image": url}]}))
    try:
        assert arrived.wait(30)
        image, out = in_thread(
            lambda: client.post("/embed", json={"inputs": [{"image": base64.b64encode(png_bytes()).decode()}]}))
        image.join(30)
        assert not image.is_alive() and out["response"].status_code == 200
        assert stuck.is_alive()  # the fetch is still waiting for its upstream
    finally:
        stop.set()
        stuck.join(30)


# --- the batcher alone --------------------------------------------------------------------------------
def fake_encoder(calls: list[list], gate: threading.Event | None = None):
    def encode(modality, items):
        if gate is not None:
            gate.wait(5)
        calls.append(list(items))
        if "bad" in items:
            raise MediaError("a bad item")
        return Encoded(np.array([[float(len(str(x))), 1.0] for x in items], dtype=np.float32))
    return encode


def run(coroutine_function):
    """Run an async test body on a fresh event loop (the batcher's queue lives on one)."""
    return asyncio.run(coroutine_function())


def test_batcher_flushes_at_max_size_without_waiting():
    calls: list[list] = []

    async def body():
        batcher = Batcher("t", fake_encoder(calls), max_batch_size=4, max_wait_s=30.0, max_queue=100)
        batcher.start()
        started = time.perf_counter()
        futures = [f for i in range(4) for f in batcher.submit("text", [f"item{i}"])]
        assert [(await f)[0][0] for f in futures] == [5.0] * 4
        assert time.perf_counter() - started < 5 and calls == [["item0", "item1", "item2", "item3"]]
        await batcher.stop()

    run(body)


def test_batcher_flushes_at_max_wait():
    calls: list[list] = []

    async def body():
        batcher = Batcher("t", fake_encoder(calls), max_batch_size=64, max_wait_s=0.05, max_queue=100)
        batcher.start()
        started = time.perf_counter()
        await batcher.encode_async("text", ["alone"])
        assert 0.04 <= time.perf_counter() - started < 2 and calls == [["alone"]]
        await batcher.stop()

    run(body)


def test_a_bad_item_fails_only_itself():
    calls: list[list] = []
    gate = threading.Event()

    async def body():
        batcher = Batcher("t", fake_encoder(calls, gate), max_batch_size=8, max_wait_s=0.01, max_queue=100)
        batcher.start()
        first = batcher.submit("text", ["warm"])  # holds the model thread at the gate while the rest queue up
        await asyncio.sleep(0.05)
        others = batcher.submit("text", ["a", "bad", "ccc"])
        gate.set()
        await first[0]
        assert (await others[0])[0][0] == 1.0 and (await others[2])[0][0] == 3.0
        with pytest.raises(MediaError):
            await others[1]
        assert ["a", "bad", "ccc"] in calls  # tried together first, then one by one
        with pytest.raises(MediaError) as caught:
            await batcher.encode_async("text", ["fine", "bad"])
        assert caught.value.index == 1  # the position in the caller's own list
        assert batcher.healthy  # bad input is not a broken model
        await batcher.stop()

    run(body)


def test_modalities_take_turns_each_in_its_own_batch_size():
    """A slow modality's backlog does not hold up another's items: batches alternate between them."""
    calls: list[tuple[str, list]] = []
    gate = threading.Event()

    def encode(modality, items):
        gate.wait(5)
        calls.append((modality, list(items)))
        return Encoded(np.ones((len(items), 2), dtype=np.float32))

    async def body():
        limits = {"text": 4, "audio": 1}
        batcher = Batcher("t", encode, max_batch_size=limits.__getitem__, max_wait_s=0.0, max_queue=100)
        batcher.start()
        first = batcher.submit("text", ["warm"])  # holds the model thread while the rest queue up
        await asyncio.sleep(0.05)
        rest = [*batcher.submit("audio", ["a1", "a2", "a3"]), *batcher.submit("text", [f"t{i}" for i in range(6)])]
        assert batcher.depth == 9
        gate.set()
        await asyncio.gather(*first, *rest)
        await batcher.stop()
        assert calls == [("text", ["warm"]), ("audio", ["a1"]), ("text", ["t0", "t1", "t2", "t3"]), ("audio", ["a2"]),
                         ("text", ["t4", "t5"]), ("audio", ["a3"])]

    run(body)


def test_a_full_queue_refuses_whole_requests_and_stop_drains():
    calls: list[list] = []
    gate = threading.Event()

    async def body():
        batcher = Batcher("t", fake_encoder(calls, gate), max_batch_size=1, max_wait_s=0.0, max_queue=3)
        batcher.start()
        running = batcher.submit("text", ["r"])
        await asyncio.sleep(0.05)  # the worker has taken "r"; the model thread waits at the gate
        queued = batcher.submit("text", ["q1", "q2"])
        with pytest.raises(Overloaded):
            batcher.submit("text", ["x", "y"])  # 2 + 2 > 3: neither is queued
        assert batcher.depth == 2
        gate.set()
        await batcher.stop()
        assert [(await f)[0][0] for f in running + queued] == [1.0, 2.0, 2.0] and not batcher.alive

    run(body)


def test_items_are_prepared_in_the_pool_while_the_model_runs():
    """The prepare step of the next batch's items runs while the model thread is busy with this one; a
    failing prepare fails its own item only, and a bad input's failure does not count against the encoder."""
    from concurrent.futures import ThreadPoolExecutor

    calls: list[list] = []
    gate, prepared_while_busy = threading.Event(), threading.Event()

    def prepare(modality, item):
        if item == "bad":
            raise MediaError("cannot read this one")
        if item == "next" and not gate.is_set():  # the model thread is still held at the gate
            prepared_while_busy.set()
        return item.upper()

    async def body():
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher("t", fake_encoder(calls, gate), prepare=prepare, prepare_pool=pool, max_batch_size=8,
                              max_wait_s=0.0, max_queue=100)
            batcher.start()
            first = batcher.submit("text", ["warm"])
            await asyncio.sleep(0.05)  # the model thread now waits at the gate with ["WARM"]
            rest = batcher.submit("text", ["next", "bad", "ok"])
            await asyncio.to_thread(prepared_while_busy.wait, 5)
            gate.set()
            assert (await first[0])[0][0] == 4.0 and (await rest[0])[0][0] == 4.0 and (await rest[2])[0][0] == 2.0
            with pytest.raises(MediaError):
                await rest[1]
            assert prepared_while_busy.is_set() and calls == [["WARM"], ["NEXT", "OK"]] and batcher.healthy
            await batcher.stop()

    run(body)
