"""deploy.ray.forward without Ray: a replica's app that keeps no collections passes collection requests
whole to the owner's app (here another app in this process), and answers everything else itself."""

from __future__ import annotations

import anyio
import pytest
from fastapi.testclient import TestClient

from deploy.ray.forward import ForwardCollections, answer_with, touches_collections
from harness.tiny_space import write_space
from service.app import create_app
from service.settings import Settings


@pytest.fixture
def space_file(tmp_path):
    return write_space(tmp_path / "space")


def test_which_requests_touch_collections():
    assert touches_collections("/collections") and touches_collections("/collections/a/items/b")
    assert touches_collections("/search") and touches_collections("/embed", b'{"inputs": ["x"], "enhance": {}}')
    assert not touches_collections("/embed", b'{"inputs": ["x"]}') and not touches_collections("/v1/embeddings")


def test_two_replicas_share_the_owners_collections(space_file, tmp_path):
    def settings(**extra) -> Settings:
        return Settings(**{"spaces": [str(space_file)], "data_dir": tmp_path / "owner", "warmup": False, **extra})

    with TestClient(create_app(settings())) as owner:
        assert owner.portal.call(owner.app.state.engine.wait_ready, 30)
        calls = []

        async def to_owner(request):  # as Ray's handle does: run on the owner's own event loop
            calls.append(request.path)
            return await anyio.to_thread.run_sync(owner.portal.call, answer_with, owner.app, request)

        replicas = []
        for name in ("a", "b"):
            app = create_app(settings(collections=False, data_dir=tmp_path / name))
            replicas.append(
                TestClient(ForwardCollections(app, to_owner, app.state.settings.max_body_bytes, replica=name)))
        with replicas[0] as one, replicas[1] as other:
            assert one.post("/collections", json={"name": "shared"}).status_code == 201
            added = one.post("/collections/shared/items", json={"items": [{"id": "d", "text": "a dog barks"}]})
            assert added.status_code == 200 and added.headers["x-freebind-forwarded-by"] == "a"
            found = other.post("/search", json={"collection": "shared", "query": {"text": "a dog"}})
            assert found.status_code == 200 and [h["id"] for h in found.json()["results"]] == ["d"]
            assert found.headers["x-freebind-forwarded-by"] == "b" and found.headers["x-request-id"]
            enhanced = other.post("/embed",
                                  json={"inputs": ["x"], "enhance": {"collection": "shared", "modality": "text"}})
            assert enhanced.status_code == 200 and enhanced.json()["enhance"]["collection"] == "shared"
            local = other.post("/embed", json={"inputs": ["a dog"]})  # answered by the replica itself
            assert local.status_code == 200 and "x-freebind-forwarded-by" not in local.headers
            assert other.get("/collections/nope").status_code == 404  # the owner's own errors come back as they are
        assert calls == ["/collections", "/collections/shared/items", "/search", "/embed", "/collections/nope"]
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no replica opened a store
