"""The same FastAPI app as a Ray Serve deployment (`pip install 'freebind[ray]'`; skipped without ray):
two replicas on a local Ray instance serve embeddings, are routed to only once ready, and share the
collections the owner deployment keeps: an item added through one replica is found through the other."""

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
def test_two_replicas_are_ready_when_routed_and_share_collections(tiny_space, tmp_path):
    ray = pytest.importorskip("ray")
    from ray import serve

    from deploy.ray.serve_app import freebind_application

    port = _free_port()
    env = {"FREEBIND_SPACES": f'["{tiny_space}"]', "FREEBIND_DATA_DIR": str(tmp_path / "data")}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(freebind_application(num_replicas=2, num_cpus=0.5), name="freebind", route_prefix="/")
        deployments = serve.status().applications["freebind"].deployments
        assert deployments["freebind"].replica_states.get("RUNNING") == 2
        assert deployments["freebind-collections"].replica_states.get("RUNNING") == 1
        base = f"http://127.0.0.1:{port}"
        # serve.run returns once every replica passed its first health check, which waits for the spaces:
        # no polling needed, no request meets a replica that is still loading
        assert httpx.get(f"{base}/health/ready", timeout=10).status_code == 200
        answers = [httpx.post(f"{base}/embed", json={"inputs": [{"text": f"dog {i}"}]}, timeout=30) for i in range(6)]
        assert all(a.status_code == 200 for a in answers) and {a.json()["space"] for a in answers} == {"tiny_ray"}

        assert httpx.post(f"{base}/collections", json={"name": "shared"}, timeout=30).status_code == 201
        adders, finders = set(), set()
        for i in range(10):  # whichever replica each request reaches, the item is there
            added = httpx.post(f"{base}/collections/shared/items",
                               json={"items": [{"id": f"i{i}", "text": f"dog {i}"}]},
                               timeout=30)
            assert added.status_code == 200, added.text
            found = httpx.post(f"{base}/search", json={"collection": "shared", "query": {"id": f"i{i}"}, "top_k": 20},
                               timeout=30)
            assert found.status_code == 200 and len(found.json()["results"]) == i  # every other item so far
            adders.add(added.headers["x-freebind-forwarded-by"])
            finders.add(found.headers["x-freebind-forwarded-by"])
        assert len(adders | finders) == 2  # both replicas took part
        assert httpx.get(f"{base}/collections/shared", timeout=10).json()["count"] == 10
        assert [p.name for p in (tmp_path / "data" / "collections").iterdir() if not p.name.startswith(".")] == [
            "shared"]
    finally:
        serve.shutdown()
        ray.shutdown()
