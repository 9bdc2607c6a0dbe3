"""The FAISS wrapper: ids kept right across deletes for every index type, and the GPU wiring."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from service.index.ann import Ann
from service.index.index_settings import IndexSettings


def data(n=300, d=8, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_results_carry_item_ids_after_deletes(kind):
    """IndexIDMap's removal would mislabel an IVF's results; every type must return the right ids."""
    x = data()
    ids = np.arange(1000, 1300)
    ann = Ann(IndexSettings(type=kind, nlist=4, nprobe=4, ef_search=300), 8)
    ann.add(ids, x)
    ann.remove(ids[:100])
    _, found = ann.search(x[150], 5)
    assert found[0, 0] == 1150  # the item itself, under its own id
    assert not set(found[0]) & set(ids[:100].tolist())
    assert sorted(ann.ids().tolist()) == ids[100:].tolist()
    restored = Ann(IndexSettings(type=kind, nlist=4, nprobe=4, ef_search=300), 8)
    restored.load_bytes(ann.to_bytes(), ann.trained_on)
    restored.remove(np.setdiff1d(restored.ids(), ids[100:]))  # what recovery does with tombstoned ids
    assert restored.search(x[150], 1)[1][0, 0] == 1150


def test_unfiltered_searches_use_a_gpu_copy_refreshed_after_writes(monkeypatch):
    copies = []

    class FakeGpu:
        def __init__(self, index):
            self.ntotal = index.ntotal
            copies.append(self)

        def search(self, q, k):
            return np.zeros((len(q), k), np.float32), np.full((len(q), k), -7, np.int64)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", FakeGpu)
    x = data()
    ann = Ann(IndexSettings(type="flat"), 8)
    ann.add(np.arange(300), x)
    assert ann.search(x[0], 3)[1][0, 0] == -7 and len(copies) == 1
    ann.search(x[0], 3)
    assert len(copies) == 1  # reused while nothing changed
    ann.remove([5])
    ann.search(x[0], 3)
    assert len(copies) == 2 and copies[-1].ntotal == 299
    assert ann.search(x[0], 3, allowed=np.array([1, 2]))[1][0, 0] in (1, 2)  # selectors: the CPU index


def test_a_failed_gpu_copy_is_logged_and_the_cpu_answers(monkeypatch, caplog):
    def refuse(index):
        raise RuntimeError("no GPU cloner for this index")

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", refuse)
    x = data()
    ann = Ann(IndexSettings(type="flat"), 8)
    ann.add(np.arange(300), x)
    assert ann.search(x[9], 1)[1][0, 0] == 9
    assert "stays on CPU" in caplog.text


@pytest.mark.skipif(faiss.omp_get_max_threads() < 2, reason="one core: nothing to narrow")
def test_a_thread_that_served_a_single_query_still_builds_on_every_core():
    """A one-query search narrows its thread to one OpenMP thread; the next build there must not inherit it."""
    from concurrent.futures import ThreadPoolExecutor

    from service.index.ann import ALL_THREADS

    x = data(n=2000)
    ann = Ann(IndexSettings(type="ivf", nlist=8, nprobe=8), 8)
    ann.add(np.arange(1000), x[:1000])

    def search_then_build() -> tuple[int, int]:
        ann.search(x[0], 5)
        after_search = faiss.omp_get_max_threads()
        ann.rebuild(np.arange(2000), x)
        return after_search, faiss.omp_get_max_threads()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(search_then_build).result() == (1, ALL_THREADS)
