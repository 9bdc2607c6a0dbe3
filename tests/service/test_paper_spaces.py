"""The paper's four spaces, served from a user's models root (issue: ImageBind++, InternVL_IB, InternVL_IB++).

A models root is built here exactly as the README tells a user to lay it out, with tiny randomly
initialised models of the real architectures (ImageBind with official state-dict names, InternVL-C
with its remote-code interface, the fused and the unfused CLAP) and bond checkpoints in the released
`<BOND>_Proj/<mode>/best.pt` layout converted by `freebind import-checkpoint`. The shipped description
files are served by the real app, and every bond output is checked against method.md's formulas
computed here from the original heads and the bare encoders.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bonds.cli import app as cli
from bonds.encoders import create_encoder
from bonds.encoders.imagebind_model import ImageBindConfig, ImageBindModel
from bonds.media import decode_audio, decode_image
from bonds.projector import FREEBIND_MODES
from service.app import create_app
from service.settings import Settings
from tests.bonds.encoders.test_hf_adapters import _write_clap
from tests.bonds.encoders.test_imagebind import CORPUS, train_merges
from tests.bonds.encoders.tiny_internvl import write_tiny_internvl

IB_DIM, INTERNVL_DIM, CLAP_DIM = 16, 12, 8  # tiny stand-ins for 1024, 768, 512
RELEASED = {  # bond folder -> (d_in, d_out): the paper's five bonds
    "IB_PP_G_Proj": (CLAP_DIM, IB_DIM), "IB_PP_M_Proj": (CLAP_DIM, IB_DIM),
    "InternVL_IB_Proj": (IB_DIM, INTERNVL_DIM),
    "InternVL_IB_PP_G_Proj": (CLAP_DIM, INTERNVL_DIM), "InternVL_IB_PP_M_Proj": (CLAP_DIM, INTERNVL_DIM),
}


def _released_heads(folder: Path, d_in: int, d_out: int, seed: int) -> list[torch.nn.Sequential]:
    heads = []
    for i, mode in enumerate(FREEBIND_MODES):
        torch.manual_seed(seed * 100 + i)
        head = torch.nn.Sequential(torch.nn.Linear(d_in, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                   torch.nn.Linear(32, d_out), torch.nn.BatchNorm1d(d_out))
        for bn in (head[1], head[4]):
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
        head.eval()
        (folder / mode).mkdir(parents=True)
        torch.save({f"Head2.mlps.{k}": v for k, v in head.state_dict().items()}, folder / mode / "best.pt")
        heads.append(head)
    return heads


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "imagebind").mkdir()
    torch.manual_seed(0)
    torch.save(ImageBindModel(ImageBindConfig.tiny()).eval().state_dict(), root / "imagebind" / "imagebind_huge.pth")
    (root / "imagebind" / "imagebind_config.json").write_text(json.dumps({"out_dim": IB_DIM, **{
        k: v for k, v in ImageBindConfig.tiny().__dict__.items() if k in (
            "vision_width", "vision_layers", "vision_heads", "text_width", "text_layers", "text_heads",
            "audio_width", "audio_layers", "audio_heads")}}))
    with gzip.open(root / "imagebind" / "bpe_simple_vocab_16e6.txt.gz", "wt") as handle:
        handle.write("\n".join(["#version: 0.2", *(" ".join(m) for m in train_merges(CORPUS, 40))]) + "\n")
    write_tiny_internvl(root / "internvl_c")
    for name, fusion in (("clap_g", True), ("clap_m", False)):  # 630k-fusion-best is fused; music+speech is not
        (root / name).mkdir()
        _write_clap(root / name, fusion=fusion)
    heads = {name: _released_heads(root / "released" / name, *dims, seed=i + 1) for i,
             (name, dims) in enumerate(RELEASED.items())}
    result = CliRunner().invoke(cli, ["import-checkpoint", str(root / "released"), str(root / "bonds")])
    assert result.exit_code == 0, result.output
    return root, heads


@pytest.fixture(scope="module")
def client(models_root, tmp_path_factory):
    root, _ = models_root
    settings = Settings(spaces=["imagebind", "imagebind_pp", "internvl_ib", "internvl_ib_pp"], models_root=root,
                        data_dir=tmp_path_factory.mktemp("data"), max_wait_ms=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        assert test_client.portal.call(test_client.app.state.engine.wait_ready, 120), test_client.app.state.engine.error
        yield test_client


@pytest.fixture(scope="module")
def encoders(models_root):
    """The bare encoders, built straight from the user's files (no space, no service)."""
    root, _ = models_root
    return {
        "imagebind": create_encoder("imagebind", checkpoint=str(root / "imagebind" / "imagebind_huge.pth")),
        "internvl_c": create_encoder("internvl_c", path=str(root / "internvl_c")),
        "clap_g": create_encoder("clap", path=str(root / "clap_g")),
        "clap_m": create_encoder("clap", path=str(root / "clap_m")),
    }


def n(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def mean_of_heads(heads, x) -> np.ndarray:
    with torch.no_grad():
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        return torch.stack([torch.nn.functional.normalize(h(xt), dim=-1) for h in heads]).mean(0).double().numpy()


TEXTS = ["a dog", "the sound of a car engine"]


@pytest.fixture(scope="module")
def media(shared_data):
    photo = (shared_data / "imagebind-demo" / "dog_image.jpg").read_bytes()
    wave, rate = sf.read(shared_data / "imagebind-demo" / "dog_audio.wav", dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, wave[: rate * 3], rate, format="WAV")
    return {"image": photo, "audio": buffer.getvalue()}


def embed(client, space, modality, payload, mixing=None):
    item = {modality: payload if modality == "text" else base64.b64encode(payload).decode()}
    response = client.post("/embed", json={"space": space, "inputs": [item], "mixing": mixing})
    assert response.status_code == 200, response.text
    body = response.json()
    return body, np.array(body["data"][0]["embedding"], dtype=np.float64)


def items(modality, payload):
    return [payload] if modality == "text" else [
        decode_image(payload) if modality == "image" else decode_audio(payload)]


def test_spaces_list_the_paper_structure(client):
    spaces = {s["name"]: s for s in client.get("/spaces").json()["spaces"]}
    assert {k: v["dim"] for k, v in spaces.items()} == {
        "imagebind": IB_DIM, "imagebind_pp": IB_DIM, "internvl_ib": INTERNVL_DIM, "internvl_ib_pp": INTERNVL_DIM}
    assert [b["name"] for b in spaces["internvl_ib_pp"]["bonds"]] == ["internvl", "clap"]
    assert set(spaces["imagebind_pp"]["presets"]) == {"versatile", "at_expertise"}
    assert "non-commercial" in json.dumps(spaces["imagebind"]["encoders"])


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_imagebind_alone_is_the_bare_encoder(client, encoders, media, modality):
    payload = TEXTS[0] if modality == "text" else media[modality]
    _, got = embed(client, "imagebind", modality, payload)
    assert np.allclose(got, encoders["imagebind"].encode(modality, items(modality, payload)).vectors[0], atol=1e-5)


@pytest.mark.parametrize("preset, f",
                         [("versatile", {"text": 0.1, "audio": 0.5}), ("at_expertise", {"text": 0.5, "audio": 0.8})])
@pytest.mark.parametrize("modality", ["text", "audio", "image"])
def test_imagebind_pp_is_the_combination_formula(client, models_root, encoders, media, preset, f, modality):
    _, heads = models_root
    payload = TEXTS[1] if modality == "text" else media[modality]
    body, got = embed(client, "imagebind_pp", modality, payload, {"preset": preset})
    base = encoders["imagebind"].encode(modality, items(modality, payload)).vectors
    if modality == "image":  # CLAP has no images: the base is untouched
        want = base
    else:
        pooled = n(0.5 * mean_of_heads(heads["IB_PP_G_Proj"],
                                       encoders["clap_g"].encode(modality, items(modality, payload)).vectors)
                   + 0.5 * mean_of_heads(heads["IB_PP_M_Proj"],
                                         encoders["clap_m"].encode(modality, items(modality, payload)).vectors))
        want = n((1 - f[modality]) * base + f[modality] * pooled)
    assert body["dim"] == IB_DIM and body["mixing"]["preset"] == preset
    assert np.allclose(got, want[0], atol=1e-5)


def _internvl_ib(heads, encoders, modality, payload):
    base = encoders["imagebind"].encode(modality, items(modality, payload)).vectors
    projected = n(mean_of_heads(heads["InternVL_IB_Proj"], base))
    if modality == "audio":  # only in the base: the displacement is the route into InternVL's space
        return projected
    expert = encoders["internvl_c"].encode(modality, items(modality, payload)).vectors
    return n(0.2 * projected + 0.8 * expert)  # released factor 0.2 on the projected term


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_internvl_ib_is_the_displacement_formula(client, models_root, encoders, media, modality):
    _, heads = models_root
    payload = TEXTS[0] if modality == "text" else media[modality]
    body, got = embed(client, "internvl_ib", modality, payload)
    assert body["dim"] == INTERNVL_DIM
    assert np.allclose(got, _internvl_ib(heads, encoders, modality, payload)[0], atol=1e-5)


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_internvl_ib_pp_is_displacement_then_combination(client, models_root, encoders, media, modality):
    _, heads = models_root
    payload = TEXTS[1] if modality == "text" else media[modality]
    body, got = embed(client, "internvl_ib_pp", modality, payload, {"preset": "at_expertise"})
    first = _internvl_ib(heads, encoders, modality, payload)
    if modality == "image":
        want = first
    else:
        f = {"text": 0.5, "audio": 0.8}[modality]
        pooled = n(0.5 * mean_of_heads(heads["InternVL_IB_PP_G_Proj"],
                                       encoders["clap_g"].encode(modality, items(modality, payload)).vectors)
                   + 0.5 * mean_of_heads(heads["InternVL_IB_PP_M_Proj"],
                                         encoders["clap_m"].encode(modality, items(modality, payload)).vectors))
        want = n((1 - f) * first + f * pooled)
    assert body["dim"] == INTERNVL_DIM
    assert np.allclose(got, want[0], atol=1e-5)


def test_a_collection_built_in_fp32_stays_searchable_served_in_bf16(models_root, media, tmp_path):
    """The precision is not part of a space's identity: a CPU server's collection (fp32) answers a bf16
    server's queries, and /spaces and /health/ready say where and in what each encoder runs."""
    root, _ = models_root
    photos = {"dog": media["image"]}
    texts = {"car": "the sound of a car engine", "bird": "a small bird singing"}
    items = [{"id": k, "text": v} for k, v in texts.items()] + [
        {"id": k, "image": base64.b64encode(v).decode()} for k, v in photos.items()]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        settings = Settings(spaces=["imagebind"], models_root=root, data_dir=tmp_path / "data", dtype=dtype)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert client.portal.call(client.app.state.engine.wait_ready, 120), client.app.state.engine.error
            if dtype == "float32":
                assert client.post("/collections", json={"name": "c", "space": "imagebind"}).status_code == 201
                assert client.post("/collections/c/items", json={"items": items}).status_code == 200
            (space,) = client.get("/spaces").json()["spaces"]
            ready = client.get("/health/ready").json()
            assert space["encoders"]["imagebind"]["precision"] == ready["encoders"]["imagebind"]["precision"] == dtype
            assert space["encoders"]["imagebind"]["device"] == "cpu"
            found = client.post("/search", json={"collection": "c", "query": {"text": texts["bird"]}, "top_k": 3})
            assert found.status_code == 200, found.text
            runs[dtype] = (space["fingerprint"], found.json()["results"])
    assert runs["float32"][0] == runs["bfloat16"][0]
    assert runs["bfloat16"][1][0]["id"] == runs["float32"][1][0]["id"] == "bird"
    assert abs(runs["bfloat16"][1][0]["score"] - runs["float32"][1][0]["score"]) < 2e-3
