"""The FAISS side of a collection: candidates by inner product, under the collection's default mixing.

An `IndexIDMap2` over a flat or HNSW index maps FAISS rows to the collection's int64 item ids; IVF keeps the ids in its
own lists (IndexIDMap's removal assumes a sub-index that shifts rows as a flat one does, which IVF does not, so wrapping
IVF would mislabel results after a delete). Filters go *into* the search as an `IDSelectorBatch`, so a restrictive
filter still yields top_k matches. HNSW cannot remove vectors: deleted ids become tombstones, excluded by a selector
until the next rebuild. With GPUs (faiss-gpu builds), unfiltered flat/IVF searches run on a copy spread over all GPUs,
refreshed after writes; a failed copy is logged and the CPU index is used.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from service.index.index_settings import IndexSettings

log = logging.getLogger(__name__)
GPU_MAX_K = 2048  # FAISS GPU top-k limit
# A handful of queries runs on the calling thread alone: OpenMP's fork/join costs more than the scan
# itself there (measured 60 ms -> 6.5 ms for one query over 20k x 384 on 2 cores), and a server gets
# its parallelism from concurrent requests. omp_set_num_threads only binds the calling thread, and binds
# it for good: every call that wants all cores (builds, batch searches) sets them back explicitly.
SERIAL_BELOW = 16
ALL_THREADS = faiss.omp_get_max_threads()  # read at import, before any thread has narrowed itself


def _ids(array) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(array, dtype=np.int64))


class Ann:
    def __init__(self, settings: IndexSettings, dim: int):
        self.settings, self.dim = settings, dim
        self.index: faiss.Index | None = None  # IndexIDMap2 (flat, hnsw) or IndexIVFFlat
        self.tombstones: set[int] = set()
        self.trained_on = 0  # IVF: vectors its centroids were trained on
        self._gpu = None
        self._gpu_stale = True

    # --- building ---------------------------------------------------------------------------------
    def _empty(self, train_nd: np.ndarray) -> faiss.Index:
        s, d = self.settings, self.dim
        if s.type == "hnsw":
            inner = faiss.IndexHNSWFlat(d, s.m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = s.ef_construction
        elif s.type == "ivf" and len(train_nd) > 0:
            nlist = int(np.clip(len(train_nd) // 39, 1, s.nlist))  # FAISS wants ~39 points per centroid
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.train(np.ascontiguousarray(train_nd, dtype=np.float32))
            self.trained_on = len(train_nd)
            return ivf
        else:
            inner = faiss.IndexFlatIP(d)  # also IVF's stand-in until there is anything to train on
        return faiss.IndexIDMap2(inner)  # the Python wrapper keeps `inner` alive with it

    def rebuild(self, ids: np.ndarray, vectors_nd: np.ndarray) -> None:
        """A fresh index over exactly these items (drops tombstones, retrains IVF)."""
        faiss.omp_set_num_threads(ALL_THREADS)  # this thread may have served a one-query search before
        self.index = self._empty(vectors_nd)
        self.tombstones.clear()
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors_nd, dtype=np.float32), _ids(ids))
        self._gpu_stale = True

    def stale(self) -> bool:
        """Worth rebuilding: many tombstones, or an IVF trained on far fewer vectors than it holds."""
        if self.index is None:
            return False
        total = self.index.ntotal
        untrained_ivf = self.settings.type == "ivf" and total >= 8 * max(self.trained_on, 39)
        return len(self.tombstones) > 0.2 * max(total, 1) or untrained_ivf

    # --- writes -----------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors_nd: np.ndarray) -> None:
        if self.index is None:
            self.rebuild(ids, vectors_nd)
            return
        if len(ids):
            faiss.omp_set_num_threads(ALL_THREADS)
            self.index.add_with_ids(np.ascontiguousarray(vectors_nd, dtype=np.float32), _ids(ids))
            self._gpu_stale = True

    def remove(self, ids) -> None:
        ids = _ids(ids)
        if self.index is None or not len(ids):
            return
        if self.settings.type == "hnsw":
            self.tombstones.update(ids.tolist())
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
        self._gpu_stale = True

    # --- reads ------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal) - len(self.tombstones)

    def _ivf(self) -> faiss.IndexIVF | None:
        index = faiss.downcast_index(self.index) if self.index is not None else None
        return index if isinstance(index, faiss.IndexIVF) else None

    def ids(self) -> np.ndarray:
        if self.index is None:
            return np.zeros(0, dtype=np.int64)
        ivf = self._ivf()
        if ivf is not None:
            lists = ivf.invlists
            found = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist)
                     if lists.list_size(i)]
            return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)
        stored = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return stored[~np.isin(stored, _ids(sorted(self.tombstones)))] if self.tombstones else stored

    def search(self, query_nd: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids `(n, k)`, best first; id -1 where fewer than k items qualify."""
        query_nd = np.ascontiguousarray(np.atleast_2d(query_nd), dtype=np.float32)
        if self.index is None or self.ntotal == 0:
            return np.zeros((len(query_nd), 0), np.float32), np.zeros((len(query_nd), 0), np.int64)
        keep = []  # selectors must outlive the search call
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(_ids(allowed))  # deleted ids are never in `allowed`
        elif self.tombstones:
            keep.append(faiss.IDSelectorBatch(_ids(sorted(self.tombstones))))
            selector = faiss.IDSelectorNot(keep[-1])
        faiss.omp_set_num_threads(1 if len(query_nd) < SERIAL_BELOW else ALL_THREADS)
        gpu = self._gpu_index() if selector is None and k <= GPU_MAX_K else None
        if gpu is not None:
            return gpu.search(query_nd, k)
        if self.settings.type == "hnsw":
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.settings.ef_search, k))
        elif self._ivf() is not None:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.settings.nprobe)
        else:
            params = faiss.SearchParameters(sel=selector)
        return self.index.search(query_nd, k, params=params)

    def _gpu_index(self):
        if not self.settings.gpu or self.settings.type == "hnsw" or faiss.get_num_gpus() == 0:
            return None
        if self._gpu_stale:
            try:
                self._gpu = faiss.index_cpu_to_all_gpus(self.index)
            except Exception as exc:  # an index type this faiss build cannot clone: say so, keep the CPU
                log.warning("ANN index stays on CPU: copying it to the GPUs failed (%s)", exc)
                self._gpu = None
            self._gpu_stale = False
        return self._gpu

    # --- persistence ------------------------------------------------------------------------------
    def to_bytes(self) -> np.ndarray:
        return faiss.serialize_index(self.index) if self.index is not None else np.zeros(0, dtype=np.uint8)

    def load_bytes(self, blob: np.ndarray, trained_on: int) -> None:
        self.index = faiss.deserialize_index(np.ascontiguousarray(blob)) if len(blob) else None
        self.tombstones.clear()
        self.trained_on = trained_on
        self._gpu_stale = True
