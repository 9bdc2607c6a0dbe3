"""Reliability fixtures: the tiny bonded space on disk, one started app shared by a module, apps with
their own settings (`make_client`, from the service tests), and the library's copy of the space."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bonds.description import load_space
from harness.tiny_space import write_space
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import make_client  # noqa: F401  (a fixture, re-exported; uses space_file below)


@pytest.fixture(scope="session")
def space_file(tmp_path_factory) -> Path:
    return write_space(tmp_path_factory.mktemp("spaces"))


@pytest.fixture(scope="module")
def shared_client(space_file: Path, tmp_path_factory) -> Iterator[TestClient]:
    """One started app (default limits) for a whole module of table-driven cases."""
    settings = Settings(spaces=[str(space_file)], data_dir=tmp_path_factory.mktemp("data"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.portal.call(client.app.state.engine.wait_ready, 60), client.app.state.engine.error
        yield client


@pytest.fixture(scope="session")
def library_space(space_file: Path):
    return load_space(space_file)
