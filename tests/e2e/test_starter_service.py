"""End to end on the real offline models: `freebind serve` with the starter space and the shipped e5
bonds, real shared media, two mixings, classification, and a restart that keeps every collection."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from bonds.description import list_spaces
from harness.processes import running_server

pytestmark = pytest.mark.models
SPACE = "starter_e5"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GERMAN = {"horse": "einem Pferd", "chicken": "einem Huhn", "cow": "einer Kuh", "cat": "einer Katze",
          "pig": "einem Schwein",
          "duck": "einer Ente", "owl": "einer Eule", "dog": "einem Hund", "sheep": "einem Schaf"}


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def post(base: str, path: str, body: dict, status: int = 200) -> dict:
    response = httpx.post(base + path, json=body, timeout=120)
    assert response.status_code == status, response.text
    return response.json()


def rank_of(results: list[dict], item: str) -> int:
    ids = [r["id"] for r in results]
    return ids.index(item) if item in ids else len(ids)


def photo_ranks(base: str, query_for: dict[str, str], mixing: dict | None) -> list[int]:
    """Rank of `photo:<title>` among the collection's photos for each title's query."""
    ranks = []
    for title, query in query_for.items():
        body = {"collection": "farm", "query": {"text": query}, "top_k": 29, "filter": {"kind": "photo"}}
        found = post(base, "/search", body if mixing is None else {**body, "mixing": mixing})
        ranks.append(rank_of(found["results"], f"photo:{title}"))
    return ranks


@pytest.fixture(scope="module")
def farm_items(shared_data) -> list[dict]:
    manifest = [
        json.loads(line) for line in (shared_data / "gcompris-farm" / "manifest.jsonl").read_text().splitlines()]
    items = []
    for entry in manifest:
        title = entry["title"].lower()
        items.append({"id": f"photo:{title}", "image": b64(shared_data / "gcompris-farm" / entry["image"]),
                      "metadata": {"kind": "photo", "title": title, "source": "gcompris"}})
        items.append({"id": f"sound:{title}", "audio": b64(shared_data / "gcompris-farm" / entry["audio"]),
                      "metadata": {"kind": "sound", "title": title, "source": "gcompris"}})
    coco = [json.loads(line) for line in (shared_data / "coco-mini" / "captions.jsonl").read_text().splitlines()][:20]
    for i, entry in enumerate(coco):
        items.append({"id": f"coco:{i}", "image": b64(shared_data / "coco-mini" / entry["image"]),
                      "metadata": {"kind": "photo", "source": "coco", "caption": entry["captions"][0]}})
    return items


@pytest.mark.skipif(SPACE not in list_spaces(), reason=f"{SPACE} is not shipped yet (make bonds)")
def test_the_offline_default_end_to_end(tmp_path, shared_data, farm_items):
    data_dir = tmp_path / "data"
    with running_server([SPACE], data_dir) as (base, _):
        spaces = httpx.get(base + "/spaces", timeout=10).json()["spaces"]
        assert spaces[0]["name"] == SPACE and spaces[0]["dim"] == 384
        presets = spaces[0]["presets"]
        assert {"english", "multilingual"} <= set(presets)

        # embed: every modality, speech transcribed, notes per item
        speech = shared_data / "fsdd-dev" / "recordings" / "7_george_0.wav"
        embedded = post(base, "/embed", {"inputs": [{"text": "a dog"}, {"text": "ein Hund"},
                                                    {"image": b64(shared_data / "imagebind-demo" / "dog_image.jpg")},
                                                    {"audio": b64(speech)}]})
        assert [row["modality"] for row in embedded["data"]] == ["text", "text", "image", "audio"]
        # spoken "seven" lands nearest the text "seven" among the ten digit words, however Whisper spelled
        # it ("seven.", "7."); the note says what was heard
        assert (embedded["data"][3].get("note") or "").startswith("transcript: ")
        words = post(base, "/embed", {"inputs": [{"text": word} for word in DIGITS]})["data"]
        similarity = [sum(a * b for a, b in zip(embedded["data"][3]["embedding"], row["embedding"], strict=True))
                      for row in words]
        assert DIGITS[similarity.index(max(similarity))] == "seven", dict(zip(DIGITS, similarity, strict=True))

        # a collection of real photos and sounds
        post(base, "/collections", {"name": "farm", "space": SPACE}, status=201)
        for start in range(0, len(farm_items), 8):
            post(base, "/collections/farm/items", {"items": farm_items[start:start + 8]})
        count = httpx.get(base + "/collections/farm", timeout=10).json()["count"]
        assert count == len(farm_items)

        # English queries (default preset): each farm photo ranks near the top among 29 photos. ImageNet has
        # no "cow" (only "ox"), so the cow photo is the known weak one; the claim is about the set.
        english = photo_ranks(base, {t: f"a photo of a {t}" for t in GERMAN}, None)
        assert sum(r <= 1 for r in english) >= 6 and sum(english) / len(english) <= 2.5, english

        # German queries: the e5 bond is what makes them work (measured mean rank 6.0 vs 15.8 without it)
        german = {t: f"Foto von {article_noun}" for t, article_noun in GERMAN.items()}
        bonded, alone = photo_ranks(base, german, {"preset": "multilingual"}), photo_ranks(base, german,
                                                                                           {"off": ["e5"]})
        assert sum(bonded) < 0.6 * sum(alone), (bonded, alone)

        # zero-shot classification of the farm photos with inline labels
        photos = [item for item in farm_items
                  if item["metadata"]["source"] == "gcompris" and item["id"].startswith("photo:")]
        titles = [item["metadata"]["title"] for item in photos]
        classified = post(base, "/classify", {"inputs": [{"image": p["image"]} for p in photos], "labels": titles,
                                              "templates": ["a photo of a {}."], "mixing": {"preset": "english"}})
        correct = sum(r["labels"][0]["label"] == title for r, title in zip(classified["results"], titles, strict=True))
        assert correct >= 7

    # restart on the same data: everything acknowledged is still there and searchable
    with running_server([SPACE], data_dir) as (base, _):
        assert httpx.get(base + "/collections/farm", timeout=10).json()["count"] == count
        assert photo_ranks(base, {t: f"a photo of a {t}" for t in GERMAN}, None) == english
