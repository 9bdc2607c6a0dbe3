"""The same FastAPI app as a Ray Serve deployment (`pip install 'freebind[ray]'`; skipped without ray):
two replicas on a local Ray instance serve embeddings, are routed to only once ready, and refuse
collections with the reason (a store is one process's); one fixed replica keeps them."""

from __future__ import annotations

import socket

import httpx
import pytest
import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny_ray.yaml"
    path.write_text(yaml.safe_dump({"format_version": 1, "name": "tiny_ray", "base": "base",
                                    "encoders": {"base": {"kind": "tiny", "options": {"dim": 16}}}}))
    return path


def test_only_a_single_replica_keeps_collections():
    pytest.importorskip("ray")
    from deploy.ray.serve_app import keeps_collections

    assert keeps_collections(1, None) and not keeps_collections(2, None)
    assert keeps_collections(None, {"min_replicas": 1, "max_replicas": 1})
    assert not keeps_collections(None, {"min_replicas": 1, "max_replicas": 8})


@pytest.mark.slow
def test_two_replicas_serve_embed_are_ready_when_routed_and_refuse_collections(tiny_space, tmp_path):
    ray = pytest.importorskip("ray")
    from ray import serve

    from deploy.ray.serve_app import freebind_deployment

    port = _free_port()
    env = {"FREEBIND_SPACES": f'["{tiny_space}"]', "FREEBIND_DATA_DIR": str(tmp_path / "data")}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(freebind_deployment(num_replicas=2, num_cpus=0.5).bind(), name="freebind", route_prefix="/")
        status = serve.status().applications["freebind"].deployments["freebind"]
        assert status.replica_states.get("RUNNING") == 2
        base = f"http://127.0.0.1:{port}"
        # serve.run returns once every replica passed its first health check, which waits for the spaces:
        # no polling needed, no request meets a replica that is still loading
        assert httpx.get(f"{base}/health/ready", timeout=10).status_code == 200
        answers = [httpx.post(f"{base}/embed", json={"inputs": [{"text": f"dog {i}"}]}, timeout=30) for i in range(8)]
        assert all(a.status_code == 200 for a in answers)
        assert {a.json()["space"] for a in answers} == {"tiny_ray"} and len(answers[0].json()["data"][0]["embedding"]) == 16
        for _ in range(4):  # whichever replica answers: the same clear refusal, nothing stored anywhere
            refused = httpx.post(f"{base}/collections", json={"name": "c"}, timeout=10)
            assert refused.status_code == 501 and "one-replica" in refused.json()["detail"]
        assert not (tmp_path / "data").exists()
    finally:
        serve.shutdown()
        ray.shutdown()
