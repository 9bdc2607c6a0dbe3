"""What an encoder notices about an item (the starter space: "no speech detected") reaches the client:
stored items keep it in their metadata, a search answer carries its query's."""

from __future__ import annotations

import base64

import numpy as np

from bonds.encoders.tiny import TinyEncoder
from tests.service.conftest import wav_bytes


def _noting_silence(monkeypatch) -> None:
    plain = TinyEncoder.postprocess

    def postprocess(self, modality, outputs):
        encoded = plain(self, modality, outputs)
        if modality == "audio":  # as the starter encoder does for clips without speech
            encoded.notes = ["no speech detected"] * len(encoded.vectors)
        return encoded

    monkeypatch.setattr(TinyEncoder, "postprocess", postprocess)


def test_items_and_queries_carry_their_notes(make_client, monkeypatch):
    _noting_silence(monkeypatch)
    client = make_client()
    clip = base64.b64encode(wav_bytes()).decode()
    assert client.post("/collections", json={"name": "sounds"}).status_code == 201
    items = [{"id": "tone", "audio": clip}, {"id": "mine", "audio": clip, "metadata": {"note": "my own"}},
             {"id": "words", "text": "a dog barks"}]
    assert client.post("/collections/sounds/items", json={"items": items}).status_code == 200
    assert client.get("/collections/sounds/items/tone").json()["metadata"] == {"note": "no speech detected"}
    assert client.get("/collections/sounds/items/mine").json()["metadata"] == {"note": "my own"}  # the client's wins
    assert client.get("/collections/sounds/items/words").json()["metadata"] == {}

    heard = client.post("/search", json={"collection": "sounds", "query": {"audio": clip}}).json()
    assert heard["query_note"] == "no speech detected"
    assert {h["id"]: h["metadata"].get("note") for h in heard["results"]}["tone"] == "no speech detected"
    typed = client.post("/search", json={"collection": "sounds", "query": {"text": "a dog"}}).json()
    assert "query_note" not in typed
    assert np.isfinite([h["score"] for h in typed["results"]]).all()
