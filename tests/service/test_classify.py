"""/classify through the ASGI app: inline labels, described labels, the shipped ImageNet set, caching."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.classify import LabelSet, class_scores
from tests.service.tiny_app import library_space, start, write_space


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    return write_space(tmp_path_factory.mktemp("space"))


@pytest.fixture
def client(space_file, tmp_path):
    client = start(space_file, tmp_path / "data")
    yield client
    client.__exit__(None, None, None)


def test_inline_names_match_the_library(client, space_file):
    space = library_space(space_file)
    names = ["dog", "car", "bird", "violin"]
    r = client.post("/classify", json={"inputs": ["a dog barking", {"text": "a red car"}], "labels": names,
                                       "templates": ["a photo of a {}.", "the sound of a {}."], "top_k": 4,
                                       "mixing": {"preset": "at_expertise"}})
    assert r.status_code == 200, r.text
    body = r.json()
    labels = LabelSet.from_names(names, ["a photo of a {}.", "the sound of a {}."])
    centers = space.embed("text", labels.descriptions, {"preset": "at_expertise"})
    queries = space.embed("text", ["a dog barking", "a red car"], {"preset": "at_expertise"})
    scores, matched = class_scores(queries, centers, labels.owner, len(names))
    for i, result in enumerate(body["results"]):
        got = {entry["label"]: entry for entry in result["labels"]}
        for k, name in enumerate(names):
            assert got[name]["score"] == pytest.approx(float(scores[i, k]), abs=1e-5)
            assert got[name]["description"] == labels.descriptions[matched[i, k]]
        assert [e["score"] for e in result["labels"]] == sorted((e["score"] for e in result["labels"]), reverse=True)
    assert body["results"][0]["labels"][0]["label"] == "dog" and body["results"][1]["labels"][0]["label"] == "car"
    assert body["fingerprint"] == space.fingerprint({"preset": "at_expertise"})


def test_described_labels_return_the_matching_description(client):
    labels = {"animal": ["a dog barks", "a cat meows", "a cow moos"], "vehicle": ["a car drives", "a truck honks"]}
    body = client.post("/classify", json={"inputs": ["a cat meows loudly"], "labels": labels}).json()
    best = body["results"][0]["labels"][0]
    assert best["label"] == "animal" and best["description"] == "a cat meows"
    mean = client.post("/classify",
                       json={"inputs": ["a cat meows loudly"], "labels": labels, "aggregate": "mean"}).json()
    assert mean["results"][0]["labels"][0]["score"] <= best["score"] + 1e-6  # a mean never beats the max


def test_imagenet_label_set_is_cached_per_fingerprint(client):
    listed = client.get("/labelsets").json()["labelsets"]
    assert {"name": "imagenet1k", "labels": 1000} == {k: listed[0][k] for k in ("name", "labels")}
    r = client.post("/classify", json={"inputs": ["a tench, a freshwater fish"], "labelset": "imagenet1k", "top_k": 3})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]["labels"]
    assert len(top) == 3 and all(e["description"] for e in top)
    cache = client.app.state.center_cache
    misses = cache.misses
    client.post("/classify", json={"inputs": ["a goldfish"], "labelset": "imagenet1k"})
    assert cache.misses == misses  # same space fingerprint and set: not embedded again
    client.post("/classify", json={"inputs": ["a goldfish"], "labelset": "imagenet1k", "mixing": {"off": ["clap"]}})
    assert cache.misses == misses + 1  # another mixing is another fingerprint


def test_classify_errors(client):
    both = client.post("/classify", json={"inputs": ["x"], "labels": ["a"], "labelset": "imagenet1k"})
    assert both.status_code == 422 and "either" in both.json()["detail"]
    unknown = client.post("/classify", json={"inputs": ["x"], "labelset": "imagenet22k"})
    assert unknown.status_code == 404 and "imagenet1k" in unknown.json()["detail"]
    template = client.post("/classify", json={"inputs": ["x"], "labels": ["a"], "templates": ["no slot"]})
    assert template.status_code == 422
    empty = client.post("/classify", json={"inputs": ["x"], "labels": {"a": []}})
    assert empty.status_code == 422 and "no description" in empty.json()["detail"]


def test_label_positions_are_the_requests_even_with_a_repeated_name(client):
    r = client.post("/classify", json={"inputs": ["a dog barking"], "labels": ["dog", "dog", "car"], "top_k": 3})
    assert r.status_code == 200, r.text
    by_index = {e["index"]: e for e in r.json()["results"][0]["labels"]}
    assert sorted(by_index) == [0, 1, 2] and by_index[2]["label"] == "car"
    assert by_index[0]["score"] == pytest.approx(by_index[1]["score"])


def test_a_template_may_name_the_label_twice(client):
    r = client.post("/classify", json={"inputs": ["a dog"], "labels": ["dog"], "templates": ["a {}, a photo of a {}"],
                                       "top_k": 1})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["labels"][0]["description"] == "a dog, a photo of a dog"


def test_vector_inputs_classify_like_their_text(client, space_file):
    space = library_space(space_file)
    v = space.embed("text", ["a dog barking"])[0]
    by_text = client.post("/classify", json={"inputs": ["a dog barking"], "labels": ["dog", "car"]}).json()
    by_vector = client.post("/classify", json={"inputs": [{"vector": v.tolist()}], "labels": ["dog", "car"]}).json()
    assert np.allclose([e["score"] for e in by_text["results"][0]["labels"]],
                       [e["score"] for e in by_vector["results"][0]["labels"]], atol=1e-5)
