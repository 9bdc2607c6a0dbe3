"""Service fixtures: a tiny bonded space on disk, and apps built from it, driven in-process.

The space: a 16-d `tiny` base (text, image, audio) with a combination bond `aux` from an 8-d `tiny`
expert (text, audio), its projector saved as a real checkpoint folder, and a preset. Apps are built by
`create_app(Settings(...))` and driven through FastAPI's TestClient with the lifespan on.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from harness.tiny_space import write_space
from service.app import create_app
from service.index import CollectionStore
from service.settings import Settings


@pytest.fixture(scope="session")
def space_file(tmp_path_factory) -> Path:
    return write_space(tmp_path_factory.mktemp("spaces"))


@pytest.fixture
def make_client(space_file: Path, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """`make_client(**settings)`: a started app (spaces loaded and warm) behind a TestClient."""
    opened: list[TestClient] = []

    def make(**overrides) -> TestClient:
        settings = Settings(**{"spaces": [str(space_file)], "data_dir": tmp_path / "data", **overrides})
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        assert client.portal.call(client.app.state.engine.wait_ready, 30), client.app.state.engine.error
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def png_bytes(color=(200, 30, 30), size=(24, 16)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 16_000, freq: float = 440.0) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


# --- index backends: the collection tests run once per backend ----------------------------------------
@dataclass(frozen=True)
class Backend:
    name: str  # "faiss" or "milvus"
    uri: str | None  # the milvus-lite file, for milvus

    def index(self, **settings) -> dict:
        return {**settings, "backend": self.name}

    def store(self, data_dir, **options) -> CollectionStore:
        return CollectionStore(data_dir, milvus_uri=self.uri, **options)


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory) -> str:
    """One real milvus-lite engine file per test module: its collections are named per FreeBind
    collection, so tests never meet each other's rows."""
    pytest.importorskip("milvus_lite", reason="the milvus extra is not installed")
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")


@pytest.fixture(params=["faiss", "milvus"])
def backend(request) -> Backend:
    return Backend(request.param, request.getfixturevalue("milvus_uri") if request.param == "milvus" else None)
