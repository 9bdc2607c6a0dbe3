"""Collections and search through the ASGI app, on a tiny bonded space.

The central claim: mixing applies at search time without re-indexing. A stored item's score under any
mixing equals the score it gets when it is embedded again under that mixing (1e-5), for items of
every modality, and rankings move when the factors move.

Every test runs on both index backends (the `backend` fixture): components in the service's memory
with FAISS candidates, and components in a real milvus-lite engine with Milvus candidates.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from bonds.media import decode_audio, decode_image
from service.index import Collection
from tests.service.tiny_app import b64, library_space, png, start, wav, write_space

at_default_mixing = Collection.is_default_mixing  # a method, called here on a stand-in that has only `meta`

TEXTS = {"t-dog": "a dog barks at night", "t-car": "a red car on the road", "t-bird": "birds sing at dawn",
         "t-cat": "a cat sleeps on the sofa", "t-rain": "rain on a tin roof"}
IMAGES = {"i-red": png((200, 30, 30)), "i-blue": png((20, 40, 220), stripe=4), "i-green": png((30, 180, 60), stripe=9)}
SOUNDS = {"a-low": wav(220.0), "a-mid": wav(880.0), "a-high": wav(3000.0)}
MIXINGS = [None, {"preset": "at_expertise"}, {"factors": {"clap": {"text": 0.9, "audio": 0.05}}}, {"off": ["clap"]}]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    return write_space(tmp_path_factory.mktemp("space"))


@pytest.fixture
def client(space_file, tmp_path, backend):
    client = start(space_file, tmp_path / "data", milvus_uri=backend.uri)
    client.backend = backend  # make() creates its collections there
    yield client
    client.__exit__(None, None, None)


def items():
    out = [{"id": k, "text": v, "metadata": {"kind": "text", "n": i}} for i, (k, v) in enumerate(TEXTS.items())]
    out += [{"id": k, "image": "data:image/png;base64," + b64(data), "metadata": {"kind": "image", "n": 10 + i}}
            for i, (k, (data, _)) in enumerate(IMAGES.items())]
    out += [{"id": k, "audio": b64(data), "metadata": {"kind": "audio", "n": 20 + i}} for i,
            (k, data) in enumerate(SOUNDS.items())]
    return out


def reference_vectors(space, mixing) -> dict[str, np.ndarray]:
    """Every item embedded afresh under `mixing` by the library, decoded as the server decodes it."""
    out = dict(zip(TEXTS, space.embed("text", list(TEXTS.values()), mixing), strict=True))
    out |= dict(zip(IMAGES, space.embed("image", [decode_image(d) for d, _ in IMAGES.values()], mixing), strict=True))
    out |= dict(zip(SOUNDS, space.embed("audio", [decode_audio(d) for d in SOUNDS.values()], mixing), strict=True))
    return out


def make(client, name="things", index=None, mixing=None):
    r = client.post("/collections",
                    json={"name": name, "space": "tinybond", "index": client.backend.index(**(index or {})),
                                          "mixing": mixing})
    assert r.status_code == 201, r.text
    r = client.post(f"/collections/{name}/items", json={"items": items()})
    assert r.status_code == 200, r.text
    assert r.json()["upserted"] == len(items())


@pytest.mark.parametrize("index", [{"type": "flat", "search": "exact"}, {"type": "hnsw", "search": "ann"},
                                   {"type": "ivf", "search": "ann", "nlist": 2, "nprobe": 2}])
@pytest.mark.parametrize("default", [None, {"preset": "at_expertise"}])
def test_search_scores_equal_re_embedding_under_any_mixing(client, space_file, index, default):
    """Under the collection's own mixing a search scores its stored vectors; under any other, the components."""
    make(client, index=index, mixing=default)
    space = library_space(space_file)
    for mixing in MIXINGS:
        for query in ({"text": "a dog barking at night"}, {"audio": b64(wav(900.0))}):
            r = client.post("/search", json={"collection": "things", "query": query, "top_k": 50, "mixing": mixing})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["fingerprint"] == space.fingerprint(mixing)
            if "text" in query:
                q = space.embed("text", [query["text"]], mixing)[0]
            else:
                q = space.embed("audio", [decode_audio(wav(900.0))], mixing)[0]
            expected = {k: float(v @ q) for k, v in reference_vectors(space, mixing).items()}
            got = {hit["id"]: hit["score"] for hit in body["results"]}
            assert set(got) == set(expected)  # every modality came back
            for key, score in got.items():
                assert score == pytest.approx(expected[key], abs=1e-5), (mixing, key)
            ranked = [hit["id"] for hit in body["results"]]
            assert ranked == sorted(expected, key=lambda k: -expected[k])


def test_only_the_collections_own_mixing_reads_its_stored_vectors(space_file):
    space = library_space(space_file)
    collection = SimpleNamespace(meta={"mixing": {"preset": "at_expertise"}})

    def plans(mixing):
        return {m: space.plan(m, space.resolve(mixing)) for m in space.modalities}

    assert at_default_mixing(collection, space, plans({"preset": "at_expertise"}))
    assert at_default_mixing(collection, space, plans({"factors": space.resolve({"preset": "at_expertise"}).factors}))
    assert not at_default_mixing(collection, space, plans(None))
    assert not at_default_mixing(collection, space, plans({"off": ["clap"]}))


def test_ranking_changes_when_factors_change(client):
    make(client)
    ranks = {}
    for f in (0.0, 1.0):
        body = client.post("/search", json={"collection": "things", "query": {"text": "a dog barks on the road"},
                                            "top_k": 5, "modalities": ["text"],
                                            "mixing": {"factors": {"clap": {"text": f}}}}).json()
        ranks[f] = [hit["id"] for hit in body["results"]]
        assert body["mixing"]["factors"]["clap"]["text"] == f
    assert ranks[0.0] != ranks[1.0]


def test_a_pooling_weight_of_1e39_scores_like_a_weight_of_1(client):
    """Issue 19, D3: a weight finite in float64 overflowed the float32 vectors it scaled (null vectors in
    /embed, null scores in /search, a collection that stored them)."""
    huge, one = {"weights": {"clap": {"clap": 1e39}}}, {"weights": {"clap": {"clap": 1.0}}}
    make(client, "heavy", mixing=huge)
    scores = {}
    for mixing in (huge, one):
        r = client.post("/search", json={"collection": "heavy", "query": {"text": "a dog barks"}, "top_k": 5,
                                         "mixing": mixing})
        assert r.status_code == 200, r.text
        scores[str(mixing)] = [(h["id"], round(h["score"], 5)) for h in r.json()["results"]]
        vector = client.post("/embed", json={"inputs": ["a dog barks"], "space": "tinybond", "mixing": mixing})
        assert np.isfinite(vector.json()["data"][0]["embedding"]).all()
    assert scores[str(huge)] == scores[str(one)]


def test_filters_apply_inside_the_search(client):
    make(client)
    query = {"text": "a dog barks"}
    only_audio = client.post("/search", json={"collection": "things", "query": query, "top_k": 3,
                                              "filter": {"kind": "audio"}}).json()["results"]
    assert sorted(h["id"] for h in only_audio) == sorted(SOUNDS)  # 3 audio items although text matches better
    ranged = client.post("/search", json={"collection": "things", "query": query, "top_k": 20,
                                          "filter": {"n": {"gte": 3, "lt": 11}}}).json()["results"]
    assert sorted(h["id"] for h in ranged) == ["i-red", "t-cat", "t-rain"]
    member = client.post("/search", json={"collection": "things", "query": query, "top_k": 20,
                                          "filter": {"kind": {"in": ["image"]}, "n": {"gt": 10}}}).json()["results"]
    assert sorted(h["id"] for h in member) == ["i-blue", "i-green"]
    bad = client.post("/search", json={"collection": "things", "query": query, "filter": {"n": {"near": 3}}})
    assert bad.status_code == 422 and "unknown operator" in bad.json()["detail"]


@pytest.mark.parametrize(("condition", "expected"), [
    ({"ne": 1}, ["a-mid", "a-plain", "t-no-key"]),  # a missing key is "not 1" (MongoDB's reading)
    ({"nin": [1, 2]}, ["a-plain", "t-no-key"]),
    ({"nin": [1, None]}, ["a-mid", "a-plain"]),  # null listed: a missing key is in the list
    ({"in": [2, None]}, ["a-mid", "t-no-key"]),
    ({"in": [None]}, ["t-no-key"]),
    ({"ne": None}, ["a-low", "a-mid", "a-plain"]),
    ({"eq": 1}, ["a-low"]),
])
def test_negative_filters_keep_items_that_lack_the_key(client, condition, expected):
    client.post("/collections", json={"name": "tags", "space": "tinybond", "index": client.backend.index()})
    items = [{"id": "a-low", "text": "low", "metadata": {"level": 1}},
             {"id": "a-mid", "text": "mid", "metadata": {"level": 2}},
             {"id": "a-plain", "text": "plain", "metadata": {"level": 3}},
             {"id": "t-no-key", "text": "none", "metadata": {}}]
    assert client.post("/collections/tags/items", json={"items": items}).status_code == 200
    r = client.post("/search",
                    json={"collection": "tags", "query": {"text": "x"}, "top_k": 10, "filter": {"level": condition}})
    assert r.status_code == 200, r.text
    assert sorted(h["id"] for h in r.json()["results"]) == expected


def test_unknown_collection_is_a_404_problem(client):
    r = client.post("/search", json={"collection": "nope", "query": {"text": "x"}})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "unknown collection 'nope'"  # not the names of the others (issue 19)
    for method, path in (("GET", "/collections/nope"), ("DELETE", "/collections/nope"),
                         ("POST", "/collections/nope/items")):
        r = client.request(method, path, json={"items": [{"id": "a", "text": "x"}]})
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_collection_lifecycle_and_items(client):
    make(client)
    assert client.post("/collections", json={"name": "things"}).status_code == 409
    assert client.post("/collections", json={"name": "bad name!"}).status_code == 422
    listed = client.get("/collections").json()["collections"]
    assert [c["name"] for c in listed] == ["things"] and listed[0]["count"] == len(items())
    info = client.get("/collections/things").json()
    assert info["modalities"] == {"text": 5, "image": 3, "audio": 3} and info["space"] == "tinybond"
    assert client.get("/collections/things/items/t-dog").json()["metadata"] == {"kind": "text", "n": 0}
    assert client.delete("/collections/things/items/t-dog").json()["deleted"] is True
    assert client.get("/collections/things/items/t-dog").status_code == 404
    assert client.delete("/collections/things/items/t-dog").status_code == 404
    client.post("/collections/things/items",
                json={"items": [{"id": "t-car", "text": "a blue car", "metadata": {"v": 2}}]})
    assert client.get("/collections/things/items/t-car").json()["metadata"] == {"v": 2}
    assert client.get("/collections/things").json()["count"] == len(items()) - 1
    assert client.delete("/collections/things").status_code == 200
    assert client.get("/collections/things").status_code == 404


def test_item_ids_may_hold_slashes(client):
    """Ids are often file paths; the item routes take them percent-encoded or as they are."""
    client.post("/collections", json={"name": "files", "space": "tinybond", "index": client.backend.index()})
    r = client.post("/collections/files/items", json={"items": [{"id": "photos/2024/dog.jpg", "text": "a dog"}]})
    assert r.status_code == 200, r.text
    assert client.get("/collections/files/items/photos%2F2024%2Fdog.jpg").json()["id"] == "photos/2024/dog.jpg"
    assert client.get("/collections/files/items/photos/2024/dog.jpg").json()["id"] == "photos/2024/dog.jpg"
    assert client.delete("/collections/files/items/photos/2024/dog.jpg").json()["deleted"] is True
    assert client.get("/collections/files/items/photos/2024/dog.jpg").status_code == 404


def test_item_vectors_near_the_float32_limits_are_stored_unit_length(client):
    client.post("/collections", json={"name": "vecs", "space": "tinybond", "index": client.backend.index()})
    v = np.arange(1, 17, dtype=np.float64)
    items = [{"id": f"x{scale}", "vector": (v * scale / 16).tolist()} for scale in (3e38, 1e-30)]
    assert client.post("/collections/vecs/items", json={"items": items}).status_code == 200
    hits = client.post("/search",
                       json={"collection": "vecs", "query": {"vector": (v * 1e-30).tolist()}}).json()["results"]
    assert [h["score"] for h in hits] == pytest.approx([1.0, 1.0], abs=1e-5)


def test_items_survive_a_restart(space_file, tmp_path, backend):
    first = start(space_file, tmp_path / "data", milvus_uri=backend.uri)
    first.backend = backend
    make(first)
    first.delete("/collections/things/items/t-cat")
    before = first.post("/search", json={"collection": "things", "query": {"text": "dog"}, "top_k": 4}).json()
    first.__exit__(None, None, None)  # milvus: the last user of the milvus-lite file stops its engine
    again = start(space_file, tmp_path / "data", milvus_uri=backend.uri)
    after = again.post("/search", json={"collection": "things", "query": {"text": "dog"}, "top_k": 4}).json()
    info = again.get("/collections/things").json()
    again.__exit__(None, None, None)
    assert after["results"] == before["results"] and info["count"] == len(items()) - 1


def test_a_collection_keeps_its_mixing_when_the_space_description_changes_its_defaults(tmp_path, backend):
    """Editing a preset's or a default factor's value changes no weights (the space id stays), but must not
    change what a collection's stored vectors mean: old and new items stay scored under one mixing."""
    space_file = write_space(tmp_path / "space")
    first = start(space_file, tmp_path / "data", milvus_uri=backend.uri)
    first.backend = backend
    make(first, mixing={"preset": "at_expertise"})
    pinned_info = first.get("/collections/things").json()["mixing"]
    first.__exit__(None, None, None)
    description = yaml.safe_load(space_file.read_text())
    description["presets"]["at_expertise"] = {"clap": {"text": 0.05, "audio": 0.1}}
    description["bonds"][0]["factors"] = {"text": 0.9, "audio": 0.9}
    space_file.write_text(yaml.safe_dump(description))
    again = start(space_file, tmp_path / "data", milvus_uri=backend.uri)
    try:
        assert again.get("/collections/things").json()["mixing"] == pinned_info
        r = again.post("/collections/things/items", json={"items": [{"id": "t-new", "text": TEXTS["t-dog"]}]})
        assert r.status_code == 200, r.text
        hits = again.post("/search", json={"collection": "things", "query": {"text": TEXTS["t-dog"]}, "top_k": 2,
                                           "mixing": pinned_info}).json()["results"]
        # the same text added before and after the edit: stored under one mixing, so the same score
        assert {h["id"] for h in hits} == {"t-dog", "t-new"}
        assert hits[0]["score"] == pytest.approx(hits[1]["score"], abs=1e-5)
    finally:
        again.__exit__(None, None, None)


def test_vector_items_and_queries_check_the_space(client, space_file):
    space = library_space(space_file)
    client.post("/collections", json={"name": "vecs", "space": "tinybond", "index": client.backend.index()})
    v = space.embed("text", ["a dog barks"])[0]
    ok = client.post("/collections/vecs/items", json={"items": [
        {"id": "v1", "vector": v.tolist(), "fingerprint": space.fingerprint(None)},
        {"id": "v2", "vector": (-v).tolist()}]})
    assert ok.status_code == 200, ok.text
    wrong = client.post("/collections/vecs/items",
                        json={"items": [{"id": "v3", "vector": v.tolist(), "fingerprint": "other@123"}]})
    assert wrong.status_code == 409 and "fingerprint" in wrong.json()["detail"]
    short = client.post("/collections/vecs/items", json={"items": [{"id": "v4", "vector": [1.0, 2.0]}]})
    assert short.status_code == 422
    hits = client.post("/search",
                       json={"collection": "vecs", "query": {"vector": v.tolist()}, "top_k": 2}).json()["results"]
    assert [h["id"] for h in hits] == ["v1", "v2"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert client.post("/collections/vecs/items",
                       json={"items": [{"id": "x", "text": "a", "image": "b"}]}).status_code == 422


def test_space_changed_since_creation_is_a_409(client):
    make(client)
    client.app.state.store.get("things").meta["space_id"] = "0123456789abcdef"  # as if the bond were retrained
    for r in (client.post("/collections/things/items", json={"items": [{"id": "n", "text": "new"}]}),
              client.post("/search", json={"collection": "things", "query": {"text": "x"}})):
        assert r.status_code == 409 and "re-create" in r.json()["detail"]


def test_query_by_id_enhance_and_multipart_upload(client, space_file):
    make(client)
    more = client.post("/search", json={"collection": "things", "query": {"id": "t-dog"}, "top_k": 3,
                                        "mixing": {"preset": "at_expertise"}}).json()["results"]
    assert "t-dog" not in [h["id"] for h in more] and len(more) == 3
    plain = client.post("/search", json={"collection": "things", "query": {"text": "red"}, "top_k": 11}).json()
    enhanced = client.post("/search", json={"collection": "things", "query": {"text": "red"}, "top_k": 11,
                                            "enhance": {"k": 2, "alpha": 0.5, "return_neighbours": True}}).json()
    assert len(enhanced["neighbours"]) == 2 and all(n["id"].startswith("i-") for n in enhanced["neighbours"])
    top_image = max((h for h in enhanced["results"] if h["modality"] == "image"), key=lambda h: h["score"])
    plain_score = next(h["score"] for h in plain["results"] if h["id"] == top_image["id"])
    assert top_image["score"] > plain_score  # the query moved toward the image manifold
    unchanged = client.post("/search", json={"collection": "things", "query": {"text": "red"}, "top_k": 11,
                                             "enhance": {"alpha": 0.0}}).json()
    assert unchanged["results"] == plain["results"]
    data, _ = png((250, 250, 0))
    up = client.post("/collections/things/items", files=[("files", ("yellow.png", data, "image/png")),
                                                         ("files", ("tone.wav", wav(440.0), "audio/wav"))],
                     data={"metadata": '{"yellow.png": {"colour": "yellow"}}'})
    assert up.status_code == 200, up.text
    assert up.json()["ids"] == ["yellow.png", "tone.wav"]
    item = client.get("/collections/things/items/yellow.png").json()
    assert item["modality"] == "image" and item["metadata"] == {"filename": "yellow.png", "colour": "yellow"}


def test_filters_give_the_same_results_on_both_backends(space_file, tmp_path, milvus_uri):
    """One collection per backend, the same items and filtered searches: identical ids, scores within 1e-6."""
    app = start(space_file, tmp_path / "data", milvus_uri=milvus_uri)
    for name, backend in (("on_faiss", "faiss"), ("on_milvus", "milvus")):
        assert app.post("/collections", json={"name": name, "space": "tinybond",
                                              "index": {"backend": backend}}).status_code == 201
        assert app.post(f"/collections/{name}/items", json={"items": items()}).status_code == 200
    try:
        for search in ({"filter": {"kind": "audio"}}, {"filter": {"n": {"gte": 3, "lt": 21}}, "mode": "ann"},
                       {"filter": {"kind": {"nin": ["text"]}, "n": {"ne": 12}}, "mixing": {"preset": "at_expertise"}},
                       {"filter": {"missing": None}, "modalities": ["text", "audio"], "mode": "ann"}):
            found = {}
            for name in ("on_faiss", "on_milvus"):
                r = app.post("/search",
                             json={"collection": name, "query": {"text": "a dog barks"}, "top_k": 6, **search})
                assert r.status_code == 200, r.text
                found[name] = [(h["id"], h["score"]) for h in r.json()["results"]]
            assert [k for k, _ in found["on_faiss"]] == [k for k, _ in found["on_milvus"]], search
            assert np.allclose([s for _, s in found["on_faiss"]], [s for _, s in found["on_milvus"]], atol=1e-6)
    finally:
        app.__exit__(None, None, None)


def test_milvus_backend_without_a_milvus_is_a_422_problem(space_file, tmp_path):
    app = start(space_file, tmp_path / "data")  # no FREEBIND_MILVUS_URI
    try:
        r = app.post("/collections", json={"name": "far", "space": "tinybond", "index": {"backend": "milvus"}})
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
        assert "FREEBIND_MILVUS_URI" in r.json()["detail"]
        assert app.get("/collections/far").status_code == 404  # nothing half-made
    finally:
        app.__exit__(None, None, None)
