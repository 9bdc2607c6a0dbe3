"""A client that leaves before its answer: the work it asked for is cancelled (issue 19, D7).

/classify with a label set under a new mixing embeds every description; a client that gave up after 15 s
used to leave the server embedding imagenet1k's 4 983 descriptions for ~2.5 min, every /embed waiting
behind them. The app is driven through ASGI directly, so the disconnect arrives exactly when the test says.
"""

from __future__ import annotations

import asyncio
import json
import threading

from service.batcher import Batcher

LABELS = [f"label number {i}" for i in range(1000)]  # 4 engine calls of 256 descriptions (classification.EMBED_CHUNK)


def hold_model_calls(batchers: list[Batcher]) -> tuple[list[int], threading.Event, threading.Event]:
    """Every model call waits for `release` (after setting `started`); `calls` gets each call's batch size."""
    calls: list[int] = []
    started, release = threading.Event(), threading.Event()
    for batcher in batchers:
        real = batcher._run_model

        def held(modality, items, real=real):
            calls.append(len(items))
            started.set()
            release.wait(60)
            return real(modality, items)

        batcher._run_model = held
    return calls, started, release


def drive(client, path: str, body: dict, leave: asyncio.Event) -> dict:
    """Run one request through the app: the body, then a disconnect once `leave` is set. Returns what the
    app sent (`status` stays None when no answer started)."""
    sent: dict = {"status": None}
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    client.portal.call(client.app, scope, receive, send)
    return sent


def test_a_client_that_leaves_cancels_the_label_set_it_asked_for(make_client):
    client = make_client(max_batch_size=256)
    engine = client.app.state.engine
    calls, started, release = hold_model_calls(list(engine.batchers.values()))
    leave = client.portal.call(asyncio.Event)
    outcome: dict = {}
    request = threading.Thread(target=lambda: outcome.update(drive(
        client, "/classify", {"inputs": ["a dog"], "labels": LABELS, "mixing": {"factors": {"aux": {"text": 0.41}}}},
        leave)))
    try:
        request.start()
        assert started.wait(60), "the first batch of descriptions never reached the model"
        client.portal.call(leave.set)  # the client goes away while the first 256 descriptions are encoded
        request.join(30)
        assert not request.is_alive(), "the request kept running after its client left"
    finally:
        release.set()
        request.join(60)
    assert outcome["status"] is None  # nothing was answered to a client that was gone
    assert client.post("/embed", json={"inputs": ["after"]}).status_code == 200  # the batchers have moved on
    encoders = len(engine.batchers)
    assert sum(calls) <= encoders * 256 + encoders  # the batch in the model when it left, then only "after"
    metrics = client.get("/metrics").text
    assert 'freebind_requests_total{method="POST",route="/classify",status="499"} 1.0' in metrics
    assert "freebind_admitted_work 0.0" in metrics and engine._in_flight == 0  # everything given back
