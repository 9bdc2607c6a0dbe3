"""The same FastAPI app as a Ray Serve deployment: two replicas on a local Ray instance (slow)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
import yaml

pytestmark = pytest.mark.slow


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


def test_two_replicas_serve_embed_and_readiness(tiny_space, tmp_path):
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
        assert sum(status.replica_states.values()) == 2
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready = httpx.get(f"{base}/health/ready", timeout=5)
            if ready.status_code == 200:
                break
            time.sleep(1)
        assert ready.status_code == 200, ready.text
        answers = [httpx.post(f"{base}/embed", json={"inputs": [{"text": f"dog {i}"}]}, timeout=30) for i in range(8)]
        assert all(a.status_code == 200 for a in answers)
        assert {a.json()["space"] for a in answers} == {"tiny_ray"} and len(answers[0].json()["data"][0]["embedding"]) == 16
        # one FREEBIND_DATA_DIR for both: each replica keeps its own locked store under it
        assert len(list((tmp_path / "data").glob("replica-*"))) == 2
    finally:
        serve.shutdown()
        ray.shutdown()
