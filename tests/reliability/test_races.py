"""Interleavings the load test hit, replayed deterministically: a search racing the first items of a new
modality. /search plans the scoring of each modality the collection held when the request began; an ingest
that adds a new modality's first item before the scoring runs must not break the search (it was a 500)."""

from __future__ import annotations

import base64

import numpy as np

from harness import bad_media as media
from service.index import Record


def test_search_while_an_ingest_adds_a_new_modality(make_client):
    client = make_client()
    store = client.app.state.store
    image = base64.b64encode(media.image("PNG", (16, 16))).decode()
    for name, item in (("race", {"id": "t", "text": "a text item"}), ("source", {"id": "img", "image": image})):
        assert client.post("/collections", json={"name": name}).status_code == 201
        assert client.post(f"/collections/{name}/items", json={"items": [item]}).status_code == 200
    modality, keys, leaves, gram = store.get("source").components("img")
    space = client.app.state.engine.space()
    stored = store.get("source").item_vectors({modality: space.plan(modality, space.resolve(None))}, ["img"])[0][0]
    collection = store.get("race")
    original = collection.search

    def search_after_a_concurrent_ingest(*args, **kwargs):  # the ingest lands between planning and scoring
        if "image" not in collection.meta["groups"]:
            collection.upsert(collection.meta["space_id"],
                              [Record("img", modality, {}, keys, leaves[0], gram[0], stored)])
        return original(*args, **kwargs)

    collection.search = search_after_a_concurrent_ingest
    r = client.post("/search", json={"collection": "race", "query": {"text": "a text item"}, "top_k": 5})
    assert r.status_code == 200, r.text
    ids = [hit["id"] for hit in r.json()["results"]]
    assert ids[0] == "t" and set(ids) <= {"t", "img"}
    r = client.post("/search", json={"collection": "race", "query": {"image": image}, "top_k": 5})
    assert r.status_code == 200 and r.json()["results"][0]["id"] == "img"
    assert np.isclose(r.json()["results"][0]["score"], 1.0, atol=1e-4)


def test_enhance_survives_a_neighbour_deleted_between_search_and_read(make_client):
    """The cache model searches for neighbours, then reads their vectors: a delete in between drops that
    neighbour from the blend instead of failing the request (it was a KeyError, a 500)."""
    client = make_client()
    image = base64.b64encode(media.image("PNG", (16, 16))).decode()
    assert client.post("/collections", json={"name": "cache"}).status_code == 201
    items = [{"id": "kept", "image": image},
             {"id": "gone", "image": base64.b64encode(media.image("PNG", (24, 24))).decode()}]
    assert client.post("/collections/cache/items", json={"items": items}).status_code == 200
    collection = client.app.state.store.get("cache")
    original = collection.search

    def search_then_a_concurrent_delete(*args, **kwargs):
        hits = original(*args, **kwargs)
        collection.delete(["gone"])
        return hits

    collection.search = search_then_a_concurrent_delete
    enhance = {"k": 2, "alpha": 0.5, "modality": "image", "return_neighbours": True}
    r = client.post("/search", json={"collection": "cache", "query": {"text": "a photo"}, "enhance": enhance})
    assert r.status_code == 200, r.text
    assert [n["id"] for n in r.json()["neighbours"]] == ["kept"]
    client.post("/collections/cache/items", json={"items": items[1:]})
    r = client.post("/embed", json={"inputs": ["a photo"], "enhance": {"collection": "cache", "k": 2, "alpha": 0.5}})
    assert r.status_code == 200, r.text
