"""The bad-input corpus: every input a client can get wrong, through the in-process app with the tiny space.

Each case gets its documented status as `application/problem+json` whose detail names the problem (or a
200 where the input is odd but valid); after each one the app is still ready and still embeds a normal
text exactly as the library does. The table is documented in docs/reliability.md (`python -m
tests.reliability.test_bad_inputs` prints it from a live app).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from harness import bad_media as media

PROBLEM = "application/problem+json"
DIM = 16  # the tiny space's dimension
NORMAL_TEXT = "a normal sentence about a dog"


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    words: tuple[str, ...]  # lower-case words the problem's detail must contain
    request: Callable[[], dict[str, Any]]  # keyword arguments of TestClient.request


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def embed(*inputs: Any, **extra: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"method": "POST", "url": "/embed", "json": {"inputs": list(inputs), **extra}}


def embed_media(kind: str, make: Callable[[], bytes]) -> Callable[[], dict[str, Any]]:
    return lambda: {"method": "POST", "url": "/embed", "json": {"inputs": [{kind: b64(make())}]}}


def raw(url: str, body: bytes | str, content_type: str = "application/json") -> Callable[[], dict[str, Any]]:
    content = body.encode() if isinstance(body, str) else body
    return lambda: {"method": "POST", "url": url, "content": content, "headers": {"content-type": content_type}}


def post(url: str, body: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"method": "POST", "url": url, "json": body}


def vector_text(values: str, n: int = DIM) -> str:
    """A JSON array of `n` numbers whose first entry is `values` (NaN and Infinity are what Python's json
    module writes and reads; strict JSON has no spelling for them)."""
    return "[" + ", ".join([values] + ["0.25"] * (n - 1)) + "]"


def search(query: dict[str, Any], **extra: Any) -> Callable[[], dict[str, Any]]:
    return post("/search", {"collection": "docs", "query": query, **extra})


def upload(name: str, data: bytes, content_type: str) -> Callable[[], dict[str, Any]]:
    return lambda: {"method": "POST", "url": "/embed/upload", "files": [("files", (name, data, content_type))]}


def multipart_items(metadata: str) -> Callable[[], dict[str, Any]]:
    """A multipart item upload (one PNG, `a.png`) with a raw `metadata` field."""
    def build() -> dict[str, Any]:
        body = (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
                b'Content-Type: image/png\r\n\r\n'
                + media.image("PNG", (8, 8)) + b'\r\n--xyz\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
                + metadata.encode() + b"\r\n--xyz--\r\n")
        return {"method": "POST", "url": "/collections/docs/items", "content": body,
                "headers": {"content-type": "multipart/form-data; boundary=xyz"}}
    return build


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def upload_item(name: str) -> Callable[[], dict[str, Any]]:
    return lambda: {"method": "POST", "url": "/collections/docs/items",
                    "files": [("files", (name, media.image("PNG", (8, 8)), "image/png"))]}


DEEP = 100_000
CASES = [
    # --- images -------------------------------------------------------------------------------------
    Case("truncated JPEG", 422, ("corrupt or truncated",),
         embed_media("image", lambda: media.truncated(media.image("JPEG", (64, 64))))),
    Case("corrupt JPEG (random bytes after the header)", 415, ("not a decodable image",),
         embed_media("image", lambda: media.corrupt(media.image("JPEG", (64, 64)), 0.1))),
    Case("truncated PNG", 422, ("corrupt or truncated",),
         embed_media("image", lambda: media.truncated(media.image("PNG", (64, 64))))),
    Case("PNG with a bad CRC", 422, ("corrupt or truncated",), embed_media("image", media.png_bad_crc)),
    Case("truncated WebP", 422, ("corrupt or truncated",),
         embed_media("image", lambda: media.truncated(media.image("WEBP", (64, 64))))),
    Case("corrupt WebP (random bytes after the header: decodes to noise)", 200, (),
         embed_media("image", lambda: media.corrupt(media.image("WEBP", (64, 64)), 0.2))),
    Case("WebP header declaring 68 billion pixels", 413, ("decompression bomb",),
         embed_media("image", media.webp_bomb)),
    Case("decompression bomb (PNG declaring 100000x100000)", 413, ("decompression bomb",),
         embed_media("image", media.bomb_png)),
    Case("20000x20000 PNG", 413, ("decompression bomb", "400000000 pixels"),
         embed_media("image", lambda: media.huge_png(20_000, 20_000))),
    Case("8000x6000 PNG (over FREEBIND_MAX_IMAGE_PIXELS)", 413, ("8000x6000", "limit is 40000000"),
         embed_media("image", lambda: media.huge_png(8000, 6000))),
    Case("1x1 PNG", 200, (), embed_media("image", lambda: media.image("PNG", (1, 1)))),
    Case("CMYK JPEG", 200, (), embed_media("image", lambda: media.image("JPEG", (32, 32), mode="CMYK"))),
    Case("16-bit grey PNG", 200, (), embed_media("image", media.png_16bit_grey)),
    Case("48-bit RGB PNG", 200, (), embed_media("image", media.png_48bit)),
    Case("animated GIF", 200, (), embed_media("image", media.animated_gif)),
    Case("SVG", 415, ("not a decodable image", "supported formats"), embed_media("image", lambda: media.SVG)),
    Case("zero-byte image", 422, ("empty", "0 bytes"), embed_media("image", lambda: b"")),
    Case("random bytes as an image", 415, ("not a decodable image",), embed_media("image", media.random_bytes)),
    Case("data URI of another type", 415, ("audio/wav", "image"), embed({"image": "data:audio/wav;base64,AAAA"})),
    Case("invalid base64", 422, ("base64",), embed({"image": "this is not base64!"})),
    Case("image upload with no content type", 415, ("modality",),
         upload("x.bin", b"\x89PNG", "application/octet-stream")),
    # --- audio --------------------------------------------------------------------------------------
    Case("zero-byte audio", 422, ("empty", "0 bytes"), embed_media("audio", lambda: b"")),
    Case("random bytes as audio", 415, ("not a decodable audio",), embed_media("audio", media.random_bytes)),
    Case("WAV with no samples", 422, ("no samples",), embed_media("audio", lambda: media.wav(0.0))),
    Case("8-bit WAV", 200, (), embed_media("audio", lambda: media.wav(subtype="PCM_U8"))),
    Case("24-bit WAV", 200, (), embed_media("audio", lambda: media.wav(subtype="PCM_24"))),
    Case("32-bit float WAV", 200, (), embed_media("audio", lambda: media.wav(subtype="FLOAT"))),
    Case("6-channel WAV", 200, (), embed_media("audio", lambda: media.wav(channels=6))),
    Case("8 kHz WAV", 200, (), embed_media("audio", lambda: media.wav(rate=8_000))),
    Case("192 kHz WAV", 200, (), embed_media("audio", lambda: media.wav(rate=192_000))),
    Case("float WAV of NaN samples", 422, ("nan",),
         embed_media("audio", lambda: media.wav(subtype="FLOAT", fill=float("nan")))),
    Case("truncated WAV", 200, (), embed_media("audio", lambda: media.truncated(media.wav(1.0)))),
    Case("WAV over the duration limit (601 s)", 413, ("601.0 s", "limit is 600 s"),
         embed_media("audio", lambda: media.wav(601.0, rate=8_000, subtype="PCM_U8"))),
    # --- vectors ------------------------------------------------------------------------------------
    Case("NaN in an /embed vector", 422, ("finite",),
         raw("/embed", '{"inputs": [{"vector": VEC}]}'.replace("VEC", vector_text("NaN")))),
    Case("wrong-length /embed vector", 422, ("3 numbers", "16-d"), embed({"vector": [0.1, 0.2, 0.3]})),
    Case("empty /embed vector", 422, ("non-empty list of numbers",), embed({"vector": []})),
    Case("NaN in a /search query vector", 422, ("finite",),
         raw("/search", '{"collection": "docs", "query": {"vector": VEC}}'.replace("VEC", vector_text("NaN")))),
    Case("Infinity in a /search query vector", 422, ("finite",),
         raw("/search", '{"collection": "docs", "query": {"vector": VEC}}'.replace("VEC", vector_text("Infinity")))),
    Case("1e999 in a /search query vector", 422, ("finite",),
         raw("/search", '{"collection": "docs", "query": {"vector": VEC}}'.replace("VEC", vector_text("1e999")))),
    Case("wrong-length /search query vector", 422, ("3 numbers", "16-d"), search({"vector": [0.1, 0.2, 0.3]})),
    Case("zero /search query vector", 422, ("zero vector",), search({"vector": [0.0] * DIM})),
    Case("NaN in an ingested item vector", 422, ("finite",),
         raw("/collections/docs/items", '{"items": [{"id": "v", "vector": VEC}]}'.replace("VEC", vector_text("NaN")))),
    Case("Infinity in an ingested item vector", 422, ("finite",),
         raw("/collections/docs/items",
             '{"items": [{"id": "v", "vector": VEC}]}'.replace("VEC", vector_text("-Infinity")))),
    Case("wrong-length ingested item vector", 422, ("17 numbers", "16-d"),
         post("/collections/docs/items", {"items": [{"id": "v", "vector": [0.5] * 17}]})),
    Case("integer too large for any float in a vector", 422, ("finite",),
         raw("/embed", '{"inputs": [{"vector": VEC}]}'.replace("VEC", vector_text("1" + "0" * 400)))),
    Case("booleans as a vector", 422, ("list of numbers",), embed({"vector": [True] * DIM})),
    Case("zero /embed vector", 422, ("zero vector",), embed({"vector": [0.0] * DIM})),
    Case("vector of 3e38 (finite, overflows float32 squares)", 200, (), embed({"vector": [3e38] * DIM})),
    # --- text ---------------------------------------------------------------------------------------
    Case("empty text", 200, (), embed("")),
    Case("text of 20000 characters (the limit)", 200, (), embed("word " * 4000)),
    Case("1 MB text", 413, ("1000000 characters", "limit is 20000"), embed("x" * 1_000_000)),
    Case("text with NUL and control characters", 200, (), embed("a\x00b\x07c\u202e")),
    Case("lone surrogate in text", 422, ("surrogate",), raw("/embed", '{"inputs": ["broken \\ud800 text"]}')),
    Case("invalid UTF-8 in a JSON body", 400, ("utf-8",), raw("/embed", b'{"inputs": ["\xff\xfe bad"]}')),
    Case("invalid UTF-8 text upload", 422, ("utf-8",), upload("t.txt", b"\xff\xfe\xfa", "text/plain")),
    Case("lone surrogate in a search filter value", 422, ("surrogate",),
         raw("/search", '{"collection": "docs", "query": {"text": "x"}, "filter": {"n": "\\ud800"}}')),
    Case("lone surrogate in multipart item metadata", 422, ("surrogate",),
         multipart_items('{"a.png": {"k": "\\ud800"}}')),
    Case("lone surrogate in an item's metadata (JSON)", 422, ("json",),
         raw("/collections/docs/items", '{"items": [{"id": "s", "text": "x", "metadata": {"k": "\\ud800"}}]}')),
    Case("1 MB /classify label", 413, ("1000000 characters", "limit is 20000"),
         post("/classify", {"inputs": ["x"], "labels": ["y" * 1_000_000]})),
    Case("lone surrogate in a /classify label", 422, ("surrogate",),
         raw("/classify", '{"inputs": ["x"], "labels": ["dog", "c\\udc00t"]}')),
    Case("lone surrogate in an item id", 422, ("json",),
         raw("/collections/docs/items", '{"items": [{"id": "a\\ud800", "text": "x"}]}')),
    Case("lone surrogate in a search by id", 422, ("surrogate",),
         raw("/search", '{"collection": "docs", "query": {"id": "\\ud800"}}')),
    Case("lone surrogate in search modalities", 422, ("valid: text, image, audio",),
         raw("/search", '{"collection": "docs", "query": {"text": "x"}, "modalities": ["\\ud800"]}')),
    Case("257 inputs (over FREEBIND_MAX_ITEMS)", 413, ("257 inputs", "limit is 256"), embed(*["x"] * 257)),
    Case("no inputs", 422, ("no inputs",), embed()),
    # --- JSON ---------------------------------------------------------------------------------------
    Case("malformed JSON", 422, ("json",), raw("/embed", '{"inputs": ["a",')),
    Case("deeply nested JSON (/embed)", 400, ("nested too deeply",),
         raw("/embed", '{"inputs": ' + "[" * DEEP + "]" * DEEP + "}")),
    Case("deeply nested JSON (item ingestion)", 422, ("recursion",),
         raw("/collections/docs/items", '{"items": ' + "[" * DEEP + "]" * DEEP + "}")),
    Case("JSON of the wrong shape", 422, ("inputs", "list"), post("/embed", {"inputs": "not a list"})),
    Case("unknown input kind", 422, ("unknown input kind", "video"), embed({"video": "AAAA"})),
    Case("unknown field", 422, ("extra",), post("/embed", {"inputs": ["x"], "colour": "red"})),
    Case("JSON body sent as text/plain", 422, ("body",), raw("/embed", '{"inputs": ["x"]}', "text/plain")),
    # --- names, mixing and limits ---------------------------------------------------------------------
    Case("unknown space", 404, ("unknown space", "nope", "tiny_bonded"), embed("x", space="nope")),
    Case("unknown collection (search)", 404, ("unknown collection", "nope"),
         post("/search", {"collection": "nope", "query": {"text": "x"}})),
    Case("unknown collection (ingestion)", 404, ("unknown collection", "nope"),
         post("/collections/nope/items", {"items": [{"id": "a", "text": "x"}]})),
    Case("unknown item (search by id)", 404, ("no item", "ghost"), search({"id": "ghost"})),
    Case("unknown bond", 422, ("nobond",), embed("x", mixing={"factors": {"nobond": {"text": 0.5}}})),
    Case("unknown modality in a mixing", 422, ("video",), embed("x", mixing={"factors": {"aux": {"video": 0.5}}})),
    Case("unknown preset", 422, ("nopreset",), embed("x", mixing={"preset": "nopreset"})),
    Case("factor below 0", 422, ("[0, 1]",), embed("x", mixing={"factors": {"aux": {"text": -0.1}}})),
    Case("factor above 1", 422, ("[0, 1]",), embed("x", mixing={"factors": {"aux": {"text": 1.5}}})),
    Case("NaN factor", 422, ("[0, 1]",),
         raw("/embed", '{"inputs": ["x"], "mixing": {"factors": {"aux": {"text": NaN}}}}')),
    Case("huge top_k", 422, ("top_k", "less than or equal to 1000"), search({"text": "x"}, top_k=10**9)),
    Case("top_k beyond 64 bits", 422, ("top_k",), search({"text": "x"}, top_k=10**40)),
    Case("top_k of 0", 422, ("top_k", "greater than or equal to 1"), search({"text": "x"}, top_k=0)),
    Case("collection name with a path", 422, ("collection name",), post("/collections", {"name": "../../etc"})),
    Case("filter key with SQL in it", 422, ("filter key",),
         search({"text": "x"}, filter={"a'); DROP TABLE items;--": 1})),
    Case("integer beyond 64 bits in a filter", 422, ("64-bit",), search({"text": "x"}, filter={"n": 10**20})),
    Case("integer beyond 64 bits in a filter comparison", 422, ("64-bit",),
         search({"text": "x"}, filter={"n": {"gt": -(10**20)}})),
    Case("unknown modality in a search", 422, ("video", "valid: text, image, audio"),
         search({"text": "x"}, modalities=["video"])),
    Case("collection name ending in a newline", 422, ("collection name",), post("/collections", {"name": "x\n"})),
    Case("Milvus URI chosen by a request", 422, ("milvus_uri", "operator"),
         post("/collections", {"name": "m", "index": {"backend": "milvus", "milvus_uri": "/tmp/x.db"}})),
    Case("multipart metadata that is not an object per file", 422, ("a.png", "json object"),
         multipart_items('{"a.png": "oops"}')),
    Case("/classify templates with described labels", 422, ("templates", "label names"),
         post("/classify", {"inputs": ["x"], "labels": {"cat": "a cat"}, "templates": ["a {}"]})),
    Case("/classify with 10001 label descriptions", 413, ("10001 label descriptions", "limit is 10000"),
         post("/classify", {"inputs": ["x"], "labels": [f"l{i}" for i in range(10_001)]})),
    Case("/classify template with a named field", 422, ("{kind}",),
         post("/classify", {"inputs": ["x"], "labels": ["cat"], "templates": ["a {} of {kind}"]})),
    Case("/classify template with an unbalanced brace", 422, ("template",),
         post("/classify", {"inputs": ["x"], "labels": ["cat"], "templates": ["a {} {"]})),
    Case("upload with a mixing of the wrong type", 422, ("factors.aux.text", "number"),
         lambda: {"method": "POST", "url": "/embed/upload", "files": [("files", ("t.txt", b"hello", "text/plain"))],
                  "data": {"mixing": '{"factors": {"aux": {"text": "high"}}}'}}),
    Case("item id over 512 characters", 422, ("id",),
         post("/collections/docs/items", {"items": [{"id": "i" * 513, "text": "x"}]})),
    # --- found by the hostile-input review of 2026-12-04 (issue 19): 500s, nulls and unbounded input before ---
    Case("100 000-deep upload mixing (D1)", 422, ("mixing", "nested too deeply"),
         lambda: {"method": "POST", "url": "/embed/upload", "files": [("files", ("a.txt", b"a", "text/plain"))],
                  "data": {"mixing": "[" * DEEP + "]" * DEEP}}),
    Case("100 000-deep multipart item metadata (D2)", 422, ("metadata", "nested too deeply"),
         multipart_items("[" * DEEP + "]" * DEEP)),
    Case("pooling weight of 1e39 (D3: was a null vector)", 200, (),
         embed("a dog", mixing={"weights": {"aux": {"aux": 1e39}}})),
    Case("pooling weight of 5e-324 (D3)", 200, (), embed("a dog", mixing={"weights": {"aux": {"aux": 5e-324}}})),
    Case("NaN in an item's metadata (D4)", 422, ("metadata", "finite"),
         raw("/collections/docs/items", '{"items": [{"id": "n", "text": "x", "metadata": {"x": NaN}}]}')),
    Case("Infinity in an item's metadata (D4)", 422, ("metadata", "finite"),
         raw("/collections/docs/items", '{"items": [{"id": "n", "text": "x", "metadata": {"x": [1, -Infinity]}}]}')),
    Case("1e999 in an item's metadata (D4)", 422, ("metadata", "finite"),
         raw("/collections/docs/items", '{"items": [{"id": "n", "text": "x", "metadata": {"x": {"y": 1e999}}}]}')),
    Case("NaN in multipart item metadata (D4)", 422, ("metadata", "nan"), multipart_items('{"a.png": {"x": NaN}}')),
    Case("1e999 in multipart item metadata (D4)", 422, ("metadata", "finite"),
         multipart_items('{"a.png": {"x": 1e999}}')),
    Case("20 KB of item metadata (over FREEBIND_MAX_METADATA_BYTES)", 413, ("metadata", "limit is 16384"),
         post("/collections/docs/items", {"items": [{"id": "m", "text": "x", "metadata": {"k": "m" * 20_000}}]})),
    Case("item metadata nested 40 levels", 422, ("metadata", "32 levels"),
         post("/collections/docs/items", {"items": [{"id": "m", "text": "x", "metadata": nested(40)}]})),
    Case("1 s WAV at 2003 Hz (D5: 1.5 GB to resample)", 200, (),
         embed_media("audio", lambda: media.wav(1.0, rate=2003))),
    Case("1 s WAV at 4001 Hz (D5: 3.3 GB, 10.6 s)", 200, (), embed_media("audio", lambda: media.wav(1.0, rate=4001))),
    Case("1 s WAV at 16001 Hz (D5)", 200, (), embed_media("audio", lambda: media.wav(1.0, rate=16_001))),
    Case("1 s WAV at 44101 Hz (D5)", 200, (), embed_media("audio", lambda: media.wav(1.0, rate=44_101))),
    Case("WAV at 500 Hz (below the decoded range)", 415, ("500 hz", "1000-768000 hz"),
         embed_media("audio", lambda: media.wav(1.0, rate=500))),
    Case("WAV at 1 MHz (above the decoded range)", 415, ("1000000 hz",),
         embed_media("audio", lambda: media.wav(0.01, rate=1_000_000))),
    Case("12 PNGs of 6300x6300 in 0.6 MB (D6: +1.4 GB RSS)", 413, ("1362.6 mb decoded", "512 mb"),
         lambda: {"method": "POST", "url": "/embed",
                  "json": {"inputs": [{"image": b64(media.huge_png(6300, 6300))}] * 12}}),
    Case("multipart file name of 604 characters (the item's id)", 422, ("604 characters", "512"),
         upload_item("f" * 600 + ".png")),
]


@pytest.fixture(scope="module")
def app_client(shared_client):
    """The module's app with a small `docs` collection to search and ingest into."""
    assert shared_client.post("/collections", json={"name": "docs"}).status_code == 201
    items = [{"id": f"d{i}", "text": f"document number {i}", "metadata": {"n": i}} for i in range(3)]
    assert shared_client.post("/collections/docs/items", json={"items": items}).status_code == 200
    return shared_client


@pytest.fixture(scope="module")
def reference(library_space) -> np.ndarray:
    return library_space.encode("text", [NORMAL_TEXT]).vectors[0]


def still_serving(client, reference: np.ndarray) -> None:
    assert client.get("/health/ready").status_code == 200
    r = client.post("/embed", json={"inputs": [NORMAL_TEXT]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_its_status_and_a_problem_that_names_it(app_client, reference, case: Case):
    r = app_client.request(**case.request())
    if case.status == 200:
        assert r.status_code == 200, r.text[:500]
        data = r.json()["data"]
        assert all(np.isfinite(row["embedding"]).all() and len(row["embedding"]) == DIM for row in data)
        assert all(abs(np.linalg.norm(row["embedding"]) - 1) < 1e-4 for row in data)  # unit vectors, never zeros
    else:
        assert r.status_code == case.status, r.text[:500]
        assert r.headers["content-type"] == PROBLEM
        body = r.json()
        assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == case.status
        detail = body["detail"].lower()
        missing = [w for w in case.words if w not in detail]
        assert not missing, f"detail {body['detail']!r} does not name {missing}"
        assert not re.search(r"object at 0x|traceback|\.py\b", detail), f"detail shows internals: {body['detail']!r}"
    still_serving(app_client, reference)


def test_no_internal_errors_were_counted(app_client):
    """Every case above was answered on purpose: the error counter never saw an unexpected failure."""
    text = app_client.get("/metrics").text
    assert 'freebind_errors_total{type="internal"}' not in text
    assert json.loads(json.dumps(app_client.get("/health/ready").json()))["status"] == "ready"


def table(client) -> list[tuple[str, int, str]]:
    """(case, status, detail) of every case against `client`: the table in docs/reliability.md."""
    rows = []
    for case in CASES:
        r = client.request(**case.request())
        detail = r.json().get("detail", "") if r.status_code != 200 else "(embedded)"
        rows.append((case.name, r.status_code, detail))
    return rows


if __name__ == "__main__":  # prints the documented table from a live in-process app
    import tempfile
    from pathlib import Path

    from fastapi.testclient import TestClient

    from harness.tiny_space import write_space
    from service.app import create_app
    from service.settings import Settings

    folder = Path(tempfile.mkdtemp())
    settings = Settings(spaces=[str(write_space(folder))], data_dir=folder / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.portal.call(client.app.state.engine.wait_ready, 60)
        client.post("/collections", json={"name": "docs"})
        client.post("/collections/docs/items", json={"items": [{"id": "d0", "text": "document"}]})
        print("| input | status | detail |\n|---|---|---|")
        for name, status, detail in table(client):
            short = detail if len(detail) < 140 else detail[:137] + "..."
            print(f"| {name} | {status} | {short.replace('|', '/')} |")
