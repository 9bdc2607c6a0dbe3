"""POST /embed and /embed/upload: every modality, mixing, order, formats, per-item errors, batching, enhance."""

from __future__ import annotations

import base64
import threading

import numpy as np
import pytest

from bonds.description import load_space
from bonds.encoders.base import Encoder
from bonds.media import decode_audio, decode_image
from harness.tiny_space import DIM, SPACE
from tests.service.conftest import png_bytes, wav_bytes

PNG, WAV = png_bytes(), wav_bytes()
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()
WAV_B64 = base64.b64encode(WAV).decode()


@pytest.fixture(scope="module")
def library(space_file):
    """The same space built by the library alone: the reference every served vector must match."""
    return load_space(space_file)


def post(client, **body):
    response = client.post("/embed", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_text_matches_the_library(client, library):
    out = post(client, inputs=[{"text": "a dog barks"}, "a cat sleeps"])
    assert out["space"] == SPACE and out["dim"] == DIM
    assert out["fingerprint"] == library.fingerprint(None)
    assert out["mixing"] == library.resolve(None).to_dict()
    got = np.array([row["embedding"] for row in out["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, library.embed("text", ["a dog barks", "a cat sleeps"]), atol=1e-6)
    assert [row["modality"] for row in out["data"]] == ["text", "text"]


def test_mixed_modalities_keep_input_order(client, library):
    inputs = [{"text": "rain"}, {"image": PNG_URI}, {"audio": WAV_B64}, {"text": "wind"}, {"image": PNG_URI}]
    out = post(client, inputs=inputs)
    assert [row["index"] for row in out["data"]] == list(range(5))
    assert [row["modality"] for row in out["data"]] == ["text", "image", "audio", "text", "image"]
    got = np.array([row["embedding"] for row in out["data"]], dtype=np.float32)
    np.testing.assert_allclose(got[[0, 3]], library.embed("text", ["rain", "wind"]), atol=1e-6)
    np.testing.assert_allclose(got[1], library.embed("image", [decode_image(PNG)])[0], atol=1e-6)
    np.testing.assert_allclose(got[2], library.embed("audio", [decode_audio(WAV)])[0], atol=1e-6)
    np.testing.assert_allclose(got[4], got[1], atol=1e-7)


def test_mixing_changes_vectors_and_fingerprint(client, library):
    default = post(client, inputs=["a dog"])
    strong = post(client, inputs=["a dog"], mixing={"preset": "strong"})
    off = post(client, inputs=["a dog"], mixing={"off": ["aux"]})
    custom = post(client, inputs=["a dog"], mixing={"factors": {"aux": {"text": 0.9}}})
    assert strong["mixing"]["preset"] == "strong" and strong["mixing"]["factors"]["aux"]["text"] == 0.8
    assert len({default["fingerprint"], strong["fingerprint"], off["fingerprint"], custom["fingerprint"]}) == 4
    for out, mixing in ((strong, {"preset": "strong"}), (off, {"off": ["aux"]})):
        np.testing.assert_allclose(out["data"][0]["embedding"], library.embed("text", ["a dog"], mixing)[0], atol=1e-6)
    assert not np.allclose(default["data"][0]["embedding"], strong["data"][0]["embedding"])


def test_bad_mixing_is_a_422_naming_the_valid_choices(client):
    r = client.post("/embed", json={"inputs": ["x"], "mixing": {"factors": {"nope": {"text": 0.5}}}})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("invalid_mixing") and "aux" in r.json()["detail"]
    r = client.post("/embed", json={"inputs": ["x"], "mixing": {"preset": "loud"}})
    assert r.status_code == 422 and "strong" in r.json()["detail"]
    r = client.post("/embed", json={"inputs": ["x"], "mixing": {"factors": {"aux": {"text": 1.5}}}})
    assert r.status_code == 422


def test_unknown_space_is_a_404_listing_served_spaces(client):
    r = client.post("/embed", json={"inputs": ["x"], "space": "nope"})
    assert r.status_code == 404 and SPACE in r.json()["detail"]


def test_base64_encoding_is_little_endian_float32(client):
    floats = post(client, inputs=["a dog", {"image": PNG_URI}])
    packed = post(client, inputs=["a dog", {"image": PNG_URI}], encoding_format="base64")
    for f, b in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(f["embedding"], dtype=np.float32))


def test_vector_inputs_pass_through_unit_normalised(client):
    v = np.arange(1, DIM + 1, dtype=np.float32)
    out = post(client, inputs=[{"vector": v.tolist()}, "text"])
    assert out["data"][0]["modality"] == "vector"
    np.testing.assert_allclose(out["data"][0]["embedding"], v / np.linalg.norm(v), atol=1e-6)
    r = client.post("/embed", json={"inputs": ["ok", {"vector": [1.0, 2.0]}]})
    assert r.status_code == 422 and r.json()["index"] == 1
    # finite float32 numbers whose squares overflow or vanish in float32 still give a unit vector
    for scale in (3e38, 1e-30):
        out = post(client, inputs=[{"vector": (v.astype(np.float64) * scale / DIM).tolist()}])
        np.testing.assert_allclose(out["data"][0]["embedding"], v / np.linalg.norm(v), atol=1e-6)


@pytest.mark.parametrize(("bad", "status", "kind"), [
    ({"image": "%%% not base64 %%%"}, 422, "invalid_input"),
    ({"image": base64.b64encode(b"GIF87a-no").decode()}, 415, "unsupported_media"),
    ({"image": "data:audio/wav;base64," + WAV_B64}, 415, "unsupported_media"),
    ({"audio": base64.b64encode(b"not audio at all").decode()}, 415, "unsupported_media"),
    ({"video": "abc"}, 422, "invalid_input"),
    ({"text": "x", "image": PNG_URI}, 422, "invalid_input"),
    ({"text": 3}, 422, "invalid_media"),
    ({"image": "https://example.com/a.png"}, 422, "invalid_input"),  # URL inputs are off by default
])
def test_a_bad_item_is_named_by_index(client, bad, status, kind):
    r = client.post("/embed", json={"inputs": ["fine", {"image": PNG_URI}, bad]})
    assert r.status_code == status, r.text
    problem = r.json()
    assert problem["index"] == 2 and problem["type"].endswith(kind) and problem["status"] == status


def test_every_bad_item_is_listed(client):
    r = client.post("/embed", json={"inputs": [{"image": "!!"}, "fine", {"audio": "??"}]})
    assert r.status_code == 422
    assert [e["index"] for e in r.json()["errors"]] == [0, 2]


def test_item_limits(make_client):
    client = make_client(max_items=3, max_text_chars=10, max_image_pixels=100, max_audio_seconds=0.25)
    r = client.post("/embed", json={"inputs": ["a"] * 4})
    assert r.status_code == 413 and r.json()["type"].endswith("too_many_items")
    for inputs, index in ((["short", "x" * 11], 1), ([{"image": PNG_URI}], 0), (["a", "b", {"audio": WAV_B64}], 2)):
        r = client.post("/embed", json={"inputs": inputs})
        assert r.status_code == 413 and r.json()["index"] == index, r.text
        assert r.json()["type"].endswith("media_too_large")


def test_upload_takes_modality_from_content_type(client, library):
    files = [("files", ("a.png", PNG, "image/png")), ("files", ("b.wav", WAV, "audio/wav")),
             ("files", ("c.txt", b"a dog barks", "text/plain"))]
    r = client.post("/embed/upload", files=files, data={"mixing": '{"preset": "strong"}'})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [row["modality"] for row in out["data"]] == ["image", "audio", "text"]
    assert out["mixing"]["preset"] == "strong"
    np.testing.assert_allclose(out["data"][2]["embedding"],
                               library.embed("text", ["a dog barks"], {"preset": "strong"})[0],
                               atol=1e-6)
    r = client.post("/embed/upload", files=[("files", ("x.bin", b"\0\1", "application/octet-stream"))])
    assert r.status_code == 415 and r.json()["index"] == 0
    r = client.post("/embed/upload", files=files[:1], data={"mixing": "{not json"})
    assert r.status_code == 422 and r.json()["type"].endswith("invalid_mixing")


def test_concurrent_requests_share_batches(make_client, library):
    client = make_client(max_wait_ms=100, warmup=False)
    texts = [f"item number {i}" for i in range(12)]
    results: dict[int, list[float]] = {}

    def one(i: int) -> None:
        results[i] = client.post("/embed", json={"inputs": [texts[i]]}).json()["data"][0]["embedding"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose([results[i] for i in range(len(texts))], library.embed("text", texts), atol=1e-6)
    registry = client.app.state.metrics.registry
    calls = registry.get_sample_value("freebind_batch_size_count", {"encoder": "base"})
    items = registry.get_sample_value("freebind_batch_size_sum", {"encoder": "base"})
    assert items == len(texts) and calls < len(texts)  # 12 one-item requests, fewer model calls


@pytest.mark.parametrize("max_batch_size", [None, 64])
def test_model_calls_take_the_configured_batch_size(make_client, library, monkeypatch, max_batch_size):
    """The encoder's own size by default; an operator's larger FREEBIND_MAX_BATCH_SIZE is not split back into it."""
    texts = [f"caption {i}" for i in range(50)]
    expected = library.embed("text", texts)
    sizes: list[int] = []
    chunk = Encoder.encode_prepared

    def recorded(self, modality, items):
        if self.name == "base":
            sizes.append(len(items))
        return chunk(self, modality, items)

    monkeypatch.setattr(Encoder, "encode_prepared", recorded)
    client = make_client(max_batch_size=max_batch_size, warmup=False)
    np.testing.assert_allclose([row["embedding"] for row in post(client, inputs=texts)["data"]], expected, atol=1e-6)
    assert sizes == ([32, 18] if max_batch_size is None else [50])


def test_enhance_pulls_queries_toward_a_collection(client):
    assert client.post("/collections", json={"name": "pics"}).status_code == 201
    items = [{"id": f"p{i}",
              "image": "data:image/png;base64," + base64.b64encode(png_bytes((40 * i, 90, 200 - 30 * i))).decode()}
             for i in range(5)]
    assert client.post("/collections/pics/items", json={"items": items}).status_code == 200
    plain = post(client, inputs=["a blue picture"])["data"][0]["embedding"]
    same = post(client, inputs=["a blue picture"], enhance={"collection": "pics", "alpha": 0.0})["data"][0]["embedding"]
    moved = post(client, inputs=["a blue picture"], enhance={"collection": "pics", "k": 3, "alpha": 0.5})
    np.testing.assert_allclose(same, plain, atol=1e-6)
    assert moved["enhance"]["collection"] == "pics"
    vector = np.asarray(moved["data"][0]["embedding"])
    assert abs(np.linalg.norm(vector) - 1) < 1e-5 and not np.allclose(vector, plain, atol=1e-3)
    assert client.post("/embed", json={"inputs": ["x"], "enhance": {"collection": "nope"}}).status_code == 404
    r = client.post("/embed", json={"inputs": ["x"], "enhance": {"collection": "pics", "modality": "audio"}})
    assert r.status_code == 422


def test_upload_without_a_useful_content_type_goes_by_the_file_name(client):
    """curl sends .wav (and .flac, .ogg) as application/octet-stream: the name's extension says audio."""
    files = [("files", ("bark.wav", wav_bytes(), "application/octet-stream")),
             ("files", ("dog.png", png_bytes(), "application/octet-stream"))]
    answer = client.post("/embed/upload", files=files)
    assert answer.status_code == 200, answer.text
    assert [row["modality"] for row in answer.json()["data"]] == ["audio", "image"]
    unknown = client.post("/embed/upload", files=[("files", ("blob.bin", b"\0\1", "application/octet-stream"))])
    assert unknown.status_code == 415 and "modality" in unknown.json()["detail"]
