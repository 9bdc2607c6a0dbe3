"""A collection's components in Milvus (index backend `milvus`), pushed there from the write-ahead log.

The write path is the FAISS one up to the acknowledgement: items, metadata and a log entry with the
components are committed to SQLite (WAL, fsynced) before a write returns. The log then serves as the
write-ahead log of Milvus: committed entries are pushed to Milvus (upsert/delete, idempotent), and a
snapshot is a Milvus flush, after which the collection truncates the log behind what Milvus holds. On
open, every entry still in the log is pushed again. So an acknowledged write survives a restart or a
crash whatever the Milvus server had persisted; a push that fails after the commit answers 503 and is
retried on the next write (the item is stored, and searchable once pushed).

Nothing per item is held in memory: exact scoring fetches components from Milvus (the candidates', a
filter's matching ids, or every row for `search="exact"` without a filter, a page at a time), and Milvus
is called outside the collection's lock, so writers do not wait on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bonds.plan import Node
from service.index import search
from service.index.backend import Search
from service.index.index_settings import IndexSettings
from service.index.log import LogReader, Record
from service.index.milvus import MilvusVectors
from service.index.search import Scored

PUSH_PAGE = 2000  # log entries read per page when pushing to Milvus


class MilvusBackend:
    def __init__(self, settings: IndexSettings, dim: int, meta: Mapping[str, Any], milvus_uri: str | None = None,
                 milvus_token: str = ""):
        uri = settings.milvus_uri or milvus_uri
        if not uri:
            raise RuntimeError("its components live in Milvus, but no Milvus is configured: set FREEBIND_MILVUS_URI "
                               "(or the "
                               "collection's index.milvus_uri)")
        self.dim, self.meta = dim, meta
        self.milvus = MilvusVectors(settings, dim, meta["milvus_uid"], uri, milvus_token)
        self.pushed = 0  # last log entry pushed to Milvus
        self._log: LogReader | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    def recover(self, log: LogReader, counts: Mapping[str, int]) -> tuple[int, int]:
        """Push every entry still in the log (Milvus may not hold it durably), then Milvus and SQLite must agree."""
        self._log = log
        for modality, keys in log.groups.items():
            self.milvus.ensure(modality, len(keys))
        self._push()
        for modality in log.groups:
            held = self.milvus.count(modality)
            if held != counts.get(modality, 0):
                raise RuntimeError(f"{counts.get(modality, 0)} {modality} items in SQLite but {held} in Milvus "
                                   f"collection {self.milvus.name(modality)!r} at {self.milvus.uri!r}: is "
                                   "FREEBIND_MILVUS_URI the Milvus it was created in?")
        return max(self.pushed, log.last_seq()), log.count()

    def close(self) -> None:
        self.milvus.close()

    def drop(self) -> None:
        self.milvus.drop()

    # --- writes: SQLite is committed by the collection; the log is pushed to Milvus from where it stopped
    def apply(self, added: list[tuple[int, Record]], removed: np.ndarray) -> None:
        self._push()

    def _push(self) -> None:
        """Every log entry after `pushed` into Milvus, a page at a time (under the lock)."""
        while entries := self._log.entries(self.pushed, PUSH_PAGE):
            # Ids are never reused and an item is deleted only after it was added, so all additions
            # and then all deletions of a page leave Milvus in the state the log describes.
            added = [e for e in entries if e.op == "add"]
            for modality in {e.modality for e in added}:
                mine = [e for e in added if e.modality == modality]
                self.milvus.upsert(modality, np.array([e.item for e in mine], dtype=np.int64),
                                       np.stack([e.leaves for e in mine]), np.stack([e.gram for e in mine]),
                                       np.stack([e.vector for e in mine]))
            deleted = np.array([e.item for e in entries if e.op == "del"], dtype=np.int64)
            for modality in self._log.groups:
                self.milvus.delete(modality, deleted)
            self.pushed = entries[-1].seq

    # --- reads: Milvus is called by the functions returned, outside the lock -----------------------
    def components(self, item: int, modality: str, keys: list[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        def fetch() -> tuple[np.ndarray, np.ndarray]:
            view = self.milvus.fetch(modality, keys, np.array([item], dtype=np.int64))
            return view.leaves, view.gram

        return fetch

    def vectors(self, plans: Mapping[str, Node],
                located: Mapping[str, np.ndarray]) -> Callable[[], list[tuple[np.ndarray, np.ndarray]]]:
        keys = {m: list(self.meta["groups"][m]) for m in located}

        def rebuild() -> list[tuple[np.ndarray, np.ndarray]]:
            out = []
            for modality, ids in located.items():
                view = self.milvus.fetch(modality, keys[modality], np.sort(ids))
                rows = np.arange(len(view.ids))
                out.append((view.ids, search.vectors_of_rows(search.plan_for(plans, modality), view, rows)))
            return out

        return rebuild

    def searcher(self, s: Search) -> Callable[[], list[Scored]]:
        """Items always score from their components here (`at_default_mixing` changes nothing): Milvus
        returns no vectors."""
        def run() -> list[Scored]:
            best: list[Scored] = []
            for modality, keys in s.groups.items():
                for view in self._views(s, modality, keys):  # the k best so far, a block (or modality) at a time
                    best += search.exact({modality: view}, s.plans, s.query_d, s.top_k, None, s.exclude)
                    best = sorted(best, key=lambda hit: (-hit.score, hit.id))[: s.top_k]
            return best

        return run

    def _views(self, s: Search, modality: str, keys: list[str]):
        if s.exact and s.allowed is None:
            return self.milvus.scan(modality, keys)
        if s.exact:
            return [self.milvus.fetch(modality, keys, s.allowed)]
        found = self.milvus.candidates(modality, s.query_d, s.candidates, s.allowed)
        return [self.milvus.fetch(modality, keys, found)]

    # --- snapshots: a Milvus flush, then the log lets go of what Milvus holds ---------------------
    def snapshot_due(self, pending: int, live: int) -> bool:
        return True  # a flush costs what was written since the last: `snapshot_every` entries are enough

    def snapshot(self, seq: int) -> Callable[[], int]:
        self._push()
        self.milvus.flush()
        pushed = self.pushed
        return lambda: pushed
