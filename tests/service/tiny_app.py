"""A served tiny bonded space for the collection, search and classify tests, and media to feed it.

Space `tinybond`: a 16-d tiny base (text, image, audio) plus a combination bond `clap` with a tiny
8-d text+audio expert through a random projector checkpoint, so every mixing factor changes scores.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from bonds.checkpoint import save_bond_checkpoint
from bonds.description import load_space
from service.app import create_app
from service.settings import get_settings
from tests.bonds.spaces import projector


def write_space(folder: Path) -> Path:
    save_bond_checkpoint(folder / "clap_ckpt", projector(8, 16, seed=5), kind="combination",
                         source={"id": "clap", "dim": 8}, target={"id": "base", "dim": 16},
                         modalities=["text", "audio"])
    description = {
        "format_version": 1,
        "name": "tinybond",
        "encoders": {"base": {"kind": "tiny", "options": {"dim": 16, "seed": 0}},
                     "clap": {"kind": "tiny", "options": {"dim": 8, "seed": 1, "modalities": ["text", "audio"]}}},
        "base": "base",
        "bonds": [{"name": "clap", "kind": "combination", "experts": {"clap": {"checkpoint": "clap_ckpt"}},
                   "factors": {"text": 0.3, "audio": 0.6}}],
        "presets": {"versatile": {"clap": {"text": 0.1, "audio": 0.5}},
                    "at_expertise": {"clap": {"text": 0.5, "audio": 0.8}}},
    }
    path = folder / "tinybond.yaml"
    path.write_text(yaml.safe_dump(description))
    return path


def library_space(path: Path):
    return load_space(path)


def start(space_file: Path, data_dir: Path, **overrides) -> TestClient:
    """A started app (lifespan run) whose engine has finished loading; `overrides`: more settings."""
    settings = get_settings(spaces=[str(space_file)], data_dir=data_dir, warmup=False, playground=False, api_keys=[],
                            **overrides)
    client = TestClient(create_app(settings))
    client.__enter__()
    deadline = time.monotonic() + 60
    while client.get("/health/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"app not ready: {client.get('/health/ready').json()}")
        time.sleep(0.05)
    return client


def png(rgb: tuple[int, int, int], stripe: int = 0) -> tuple[bytes, Image.Image]:
    pixels = np.zeros((16, 16, 3), dtype=np.uint8) + np.array(rgb, dtype=np.uint8)
    pixels[:, :stripe] = 255 - pixels[:, :stripe]
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), image


def wav(freq: float, rate: int = 16_000) -> bytes:
    t = np.arange(rate // 2) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
