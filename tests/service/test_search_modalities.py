"""Which modalities a search scores: those asked for, known to the space, and reachable under the mixing.

The space here embeds audio only through its combination bond (the base has text and image), so a
mixing that switches the bond off leaves audio items with no way to be scored.
"""

from __future__ import annotations

import json

import pytest
import yaml

from bonds.checkpoint import save_bond_checkpoint
from tests.bonds.spaces import projector
from tests.service.tiny_app import b64, start, wav

OFF = {"off": ["aux"]}


@pytest.fixture
def client(tmp_path):
    save_bond_checkpoint(tmp_path / "aux_ckpt", projector(8, 16, seed=3), kind="combination",
                         source={"id": "aux", "dim": 8}, target={"id": "base", "dim": 16}, modalities=["text", "audio"])
    description = {
        "format_version": 1, "name": "audio_by_bond", "base": "base",
        "encoders": {"base": {"kind": "tiny", "options": {"dim": 16, "seed": 0, "modalities": ["text", "image"]}},
                     "aux": {"kind": "tiny", "options": {"dim": 8, "seed": 1, "modalities": ["text", "audio"]}}},
        "bonds": [
            {"name": "aux", "kind": "combination", "experts": {"aux": {"checkpoint": "aux_ckpt"}},
             "factors": {"text": 0.3}}],
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(description))
    client = start(tmp_path / "space.yaml", tmp_path / "data")
    yield client
    client.__exit__(None, None, None)


def add(client, name, items):
    assert client.post("/collections", json={"name": name}).status_code == 201
    r = client.post(f"/collections/{name}/items", json={"items": items})
    assert r.status_code == 200, r.text


def search(client, name, **body):
    return client.post("/search", json={"collection": name, "query": {"text": "a dog barks"}, **body})


def test_a_mixing_that_cuts_a_modality_off_still_searches_the_others(client):
    add(client, "texts", [{"id": "t1", "text": "a dog barks"}, {"id": "t2", "text": "rain on a roof"}])
    r = search(client, "texts", mixing=OFF)
    assert r.status_code == 200, r.text
    assert [h["id"] for h in r.json()["results"]] == ["t1", "t2"]


def test_items_that_cannot_be_scored_under_the_mixing_are_a_clear_422(client):
    add(client, "mixed", [{"id": "t1", "text": "a dog barks"}, {"id": "a1", "audio": b64(wav(440.0))}])
    refused = search(client, "mixed", mixing=OFF)
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "audio" in refused.json()["detail"] and "modalities" in refused.json()["detail"]
    only_text = search(client, "mixed", mixing=OFF, modalities=["text"])
    assert only_text.status_code == 200 and [h["id"] for h in only_text.json()["results"]] == ["t1"]
    both = search(client, "mixed")  # the bond on: audio is reachable again
    assert {h["id"] for h in both.json()["results"]} == {"t1", "a1"}


def test_unknown_modalities_are_refused_with_the_valid_ones(client):
    add(client, "texts", [{"id": "t1", "text": "a dog barks"}])
    for asked in (["video"], ["\ud800"]):  # a lone surrogate: valid JSON ("\\ud800"), not valid Unicode
        body = {"collection": "texts", "query": {"text": "a dog"}, "modalities": asked}
        r = client.post("/search", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert "valid: text, image, audio, vector" in r.json()["detail"]
