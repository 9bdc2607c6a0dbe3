"""GET /spaces, the health endpoints (loading, failed start, dead worker, failing encoder), GET /metrics."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from harness.tiny_space import DIM, SPACE
from service.app import create_app
from service.batcher import FAILURE_LIMIT
from service.engine import Engine
from service.settings import Settings
from tests.service.conftest import png_bytes


def started(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.__enter__()
    return client


def test_spaces_describe_bonds_presets_and_licences(client):
    out = client.get("/spaces").json()
    assert out["default"] == SPACE
    (space,) = out["spaces"]
    assert space["name"] == SPACE and space["dim"] == DIM and space["default"] is True
    assert space["modalities"] == ["text", "image", "audio"]
    assert space["bonds"] == [{"name": "aux", "kind": "combination", "experts": ["aux"],
                               "modalities": ["text", "audio"], "defaults": {"text": 0.3, "audio": 0.5}}]
    assert space["presets"] == {"strong": {"aux": {"text": 0.8, "audio": 0.8}}}
    assert set(space["encoders"]) == {"base", "aux"} and all(e["licence"] for e in space["encoders"].values())
    assert space["fingerprint"].startswith(f"{SPACE}@") and space["default_mixing"]["factors"]["aux"]["text"] == 0.3
    assert client.get(f"/spaces/{SPACE}").json() == space
    missing = client.get("/spaces/nope")
    assert missing.status_code == 404 and SPACE in missing.json()["detail"]


def test_playground_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").status_code == 200


def test_several_spaces_share_encoders_and_batchers(make_client, space_file: Path, tmp_path: Path):
    other = yaml.safe_load(space_file.read_text())
    other["name"], other["bonds"][0]["experts"]["aux"]["checkpoint"] = "tiny_other", str(
        space_file.parent / "checkpoints" / "aux_into_base")
    second = tmp_path / "tiny_other.yaml"
    second.write_text(yaml.safe_dump(other))
    client = make_client(spaces=[str(space_file), str(second)], default_space="tiny_other")
    out = client.get("/spaces").json()
    assert out["default"] == "tiny_other" and [s["name"] for s in out["spaces"]] == [SPACE, "tiny_other"]
    assert client.post("/embed", json={"inputs": ["x"]}).json()["space"] == "tiny_other"
    assert len(client.app.state.engine.batchers) == 2  # base and aux, once each for both spaces


def test_ready_only_once_loaded_and_warm(monkeypatch, space_file, tmp_path):
    release = threading.Event()
    load = Engine._load_spaces
    monkeypatch.setattr(Engine, "_load_spaces", lambda self: (release.wait(10), load(self)))
    client = started(Settings(spaces=[str(space_file)], data_dir=tmp_path))
    try:
        assert client.get("/health/live").status_code == 200
        loading = client.get("/health/ready")
        assert loading.status_code == 503 and loading.json()["state"] == "loading"
        early = client.post("/embed", json={"inputs": ["x"]})
        assert early.status_code == 503 and "Retry-After" in early.headers
        release.set()
        assert client.portal.call(client.app.state.engine.wait_ready, 10)
        ready = client.get("/health/ready").json()
        assert ready["status"] == "ready" and set(ready["encoders"]) == {"base", "aux"}
    finally:
        client.__exit__(None, None, None)


def test_a_failed_start_fails_liveness(tmp_path):
    client = started(Settings(spaces=["no_such_space"], data_dir=tmp_path))
    try:
        assert not client.portal.call(client.app.state.engine.wait_ready, 10)
        live, ready = client.get("/health/live"), client.get("/health/ready")
        assert live.status_code == ready.status_code == 503
        assert "no_such_space" in live.json()["error"]
        embed = client.post("/embed", json={"inputs": ["x"]})  # a 503 to retry elsewhere, not a 404
        assert embed.status_code == 503 and "failed to start" in embed.json()["detail"]
    finally:
        client.__exit__(None, None, None)


def test_a_dead_worker_fails_health_and_requests(client):
    batcher = next(b for b in client.app.state.engine.batchers.values() if b.name == "base")

    def die(modality, items):
        raise SystemExit("simulated crash of the model thread")

    batcher._run_model = die
    dying = client.post("/embed", json={"inputs": ["x"]})
    assert dying.status_code == 503  # answered, not left hanging
    assert not batcher.alive and batcher.died is not None
    assert client.get("/health/live").status_code == 503
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["encoders"]["base"]["alive"] is False
    assert client.post("/embed", json={"inputs": ["x"]}).status_code == 503


def test_a_failing_encoder_turns_unready_and_recovers(client, caplog):
    batcher = next(b for b in client.app.state.engine.batchers.values() if b.name == "base")
    healthy_encode = batcher._run_model

    def broken(modality, items):
        raise RuntimeError("device lost: secret internal detail")

    batcher._run_model = broken
    for _ in range(FAILURE_LIMIT):
        r = client.post("/embed", json={"inputs": ["x"]})
        assert r.status_code == 500 and "secret" not in r.text and r.json()["request_id"] == r.headers["x-request-id"]
    assert "secret internal detail" in caplog.text  # the log has it, the client does not
    assert client.get("/health/live").status_code == 200  # a restart is not needed...
    assert client.get("/health/ready").status_code == 503  # ...but traffic should go elsewhere
    batcher._run_model = healthy_encode
    assert client.get("/health/ready").status_code == 200  # the readiness probe proved it works again
    assert client.post("/embed", json={"inputs": ["x"]}).status_code == 200


def test_a_modality_that_keeps_failing_keeps_the_service_unready(client):
    """Failures count per modality: a working text path must not hide (or reset) a broken image path, and
    the readiness probe tries the modality that failed."""
    batcher = next(b for b in client.app.state.engine.batchers.values() if b.name == "base")
    healthy_encode = batcher._run_model

    def images_broken(modality, items):
        if modality == "image":
            raise RuntimeError("image path lost")
        return healthy_encode(modality, items)

    batcher._run_model = images_broken
    image = {"image": "data:image/png;base64," + base64.b64encode(png_bytes()).decode()}
    for _ in range(FAILURE_LIMIT):
        assert client.post("/embed", json={"inputs": [image]}).status_code == 500
        assert client.post("/embed", json={"inputs": ["x"]}).status_code == 200  # text interleaved, still fine
    assert client.get("/health/ready").status_code == 503  # probed with an image, not with text
    batcher._run_model = healthy_encode
    assert client.get("/health/ready").status_code == 200


def test_an_encoder_answering_the_wrong_number_of_rows_fails_that_batch_only(client):
    batcher = next(b for b in client.app.state.engine.batchers.values() if b.name == "base")
    healthy_encode = batcher._run_model

    def short(modality, items):
        encoded = healthy_encode(modality, items)
        return type(encoded)(encoded.vectors[:-1], encoded.notes[:-1])

    batcher._run_model = short
    assert client.post("/embed", json={"inputs": ["x", "y"]}).status_code == 500
    batcher._run_model = healthy_encode
    assert batcher.alive and client.post("/embed", json={"inputs": ["x"]}).status_code == 200  # the worker lives on


def test_a_request_of_several_modalities_is_admitted_whole(make_client):
    client = make_client(max_queue=4, max_items=10)
    image = {"image": "data:image/png;base64," + base64.b64encode(png_bytes()).decode()}
    assert client.post("/embed", json={"inputs": ["a", "b", image, image]}).status_code == 200  # 4 of 4 permits
    items = client.app.state.engine.metrics.items
    before = {m: items.labels(SPACE, m)._value.get() for m in ("text", "image")}
    r = client.post("/embed", json={"inputs": ["a", "b", "c", image, image, image]})
    assert r.status_code == 413 and "6 items" in r.json()["detail"]  # never admissible: not a 429 to retry forever
    # and nothing of it was encoded
    assert {m: items.labels(SPACE, m)._value.get() for m in ("text", "image")} == before


def test_metrics_cover_stages_batches_queues_and_errors(client):
    image = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAA"
             "AElFTkSuQmCC")
    assert client.post("/embed", json={"inputs": ["a", {"image": image}]}).status_code == 200
    assert client.post("/embed", json={"inputs": ["a"], "mixing": {"preset": "nope"}}).status_code == 422
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for stage in ("decode", "queue", "encode", "bond"):
        assert f'freebind_stage_seconds_count{{stage="{stage}"}}' in text, stage
    assert 'freebind_batch_size_count{encoder="base"}' in text
    assert 'freebind_queue_depth{encoder="base"} 0.0' in text
    assert 'freebind_errors_total{type="invalid_mixing"} 1.0' in text
    assert 'freebind_requests_total{method="POST",route="/embed",status="200"} 1.0' in text
    assert f'freebind_items_total{{modality="image",space="{SPACE}"}}' in text
    assert "process_resident_memory_bytes" in text and "python_info" in text  # the standard process metrics


def test_docs_static_files_and_the_schema_are_counted_by_route_not_as_unmatched(client):
    for path in ("/docs", "/openapi.json", "/static/app.js", "/docs-assets/swagger-ui.css", "/favicon.ico"):
        assert client.get(path).status_code == 200, path
    assert client.get("/no/such/page").status_code == 404
    text = client.get("/metrics").text
    for route in ("/docs", "/openapi.json", "/static", "/docs-assets", "/favicon.ico"):
        assert f'freebind_requests_total{{method="GET",route="{route}",status="200"}} 1.0' in text, route
    assert 'route="unmatched",status="404"} 1.0' in text


def test_torch_threads_setting_sizes_the_intra_op_pool(make_client):
    import torch

    before = torch.get_num_threads()
    try:
        client = make_client(torch_threads=1)
        seen: list[int] = []  # torch's pool size is per thread, set from the global when a thread first uses it:
        probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # as the model threads do
        probe.start()
        probe.join()
        assert seen == [1]
        assert client.post("/embed", json={"inputs": [{"text": "still embeds"}]}).status_code == 200
    finally:
        torch.set_num_threads(before)
