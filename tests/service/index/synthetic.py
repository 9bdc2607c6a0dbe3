"""Synthetic one-leaf components for store tests: no encoder needed, vectors a function of the id."""

from __future__ import annotations

import zlib

import numpy as np

from bonds.plan import Encode
from service.index import CollectionStore, Record

DIM = 8
SPACE_ID = "synthetic-space-id"
PLAN = Encode("synthetic", "text")
PLANS = {"text": PLAN}
BATCH = 5


def vector(key: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    x = rng.standard_normal(DIM).astype(np.float32)
    return x / np.linalg.norm(x)


def record(key: str, **metadata) -> Record:
    v = vector(key)
    return Record(key, "text", {"key": key, **metadata}, [PLAN.key], v[None, :], np.ones((1, 1)), v)


def records_for_batch(batch: int) -> list[Record]:
    return [record(f"b{batch}-{i}", batch=batch, i=i) for i in range(BATCH)]


def deleted_in(batch: int) -> list[str]:
    """Every third batch deletes the first item of the batch before it (so deletes hit the log too)."""
    return [f"b{batch - 1}-0"] if batch % 3 == 0 and batch > 0 else []


def open_store(data_dir, snapshot_every: int = 10_000, milvus_uri: str | None = None, **index) -> CollectionStore:
    """A store with collection "crash"; `milvus_uri` given, "crash" lives in that Milvus."""
    store = CollectionStore(data_dir, snapshot_every=snapshot_every, milvus_uri=milvus_uri)
    store.open()
    if milvus_uri:
        index["backend"] = "milvus"
    if "crash" not in store.names():
        store.create("crash", "synthetic", SPACE_ID, DIM, index or None, {})
    return store
