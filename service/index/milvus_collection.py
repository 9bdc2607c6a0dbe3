"""A collection whose components live in Milvus (index backend `milvus`), with the same API as FAISS.

The write path is the FAISS one up to the acknowledgement: items, metadata and a log entry with the
components are committed to SQLite (WAL, fsynced) before a write returns. The log then serves as the
write-ahead log of Milvus: committed entries are pushed to Milvus (upsert/delete, idempotent), and a
"snapshot" is a Milvus flush, after which `milvus_seq` in `meta` records the last entry Milvus holds
durably and the log is truncated behind it. On open, entries after `milvus_seq` are pushed again. So
an acknowledged write survives a restart or a crash whatever the Milvus server had persisted; a push
that fails after the commit answers 503 and is retried on the next write (the item is stored, and
searchable once pushed).

Nothing per item is held in memory: exact scoring fetches components from Milvus (the candidates', a
filter's matching ids, or every row for `search="exact"` without a filter, a page at a time).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bonds.plan import Node
from service.index import search
from service.index.collection import Collection, Hit
from service.index.milvus import MilvusVectors
from service.index.search import Scored

PUSH_PAGE = 2000  # log entries read per page when pushing to Milvus


class MilvusCollection(Collection):
    def __init__(self, folder: Path, conn: sqlite3.Connection, snapshot_every: int, milvus_uri: str | None = None,
                 milvus_token: str = "", **_backend: Any):
        super().__init__(folder, conn, snapshot_every)
        uri = self.settings.milvus_uri or milvus_uri
        if not uri:
            raise RuntimeError(f"collection {self.name!r} lives in Milvus, but no Milvus is configured: "
                               "set FREEBIND_MILVUS_URI (or the collection's index.milvus_uri)")
        self.vectors = MilvusVectors(self.settings, self.dim, self.meta["milvus_uid"], uri, milvus_token)
        self.pushed = 0  # last log entry pushed to Milvus
        self._counted: tuple[int, dict[str, int]] = (-1, {})  # (seq, items per modality) as of that entry

    # --- lifecycle --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Push the log entries Milvus may not hold durably, then Milvus and SQLite must agree."""
        for modality, keys in self.meta.get("groups", {}).items():
            self.vectors.ensure(modality, len(keys))
        self.pushed = self.meta.get("milvus_seq", 0)
        last = self._conn.execute("SELECT max(seq) FROM log").fetchone()[0]
        self.seq = max(self.pushed, last or 0)
        self._push()
        self._unsnapshotted = self.seq - self.meta.get("milvus_seq", 0)
        stored = self._counts()
        for modality in self.meta.get("groups", {}):
            held = self.vectors.count(modality)
            if held != stored.get(modality, 0):
                raise RuntimeError(f"collection {self.name!r}: {stored.get(modality, 0)} {modality} items in SQLite "
                                   f"but {held} in Milvus collection {self.vectors.name(modality)!r} at "
                                   f"{self.vectors.uri!r}: is FREEBIND_MILVUS_URI the Milvus it was created in?")

    def discard(self) -> None:
        with self._snapshotting, self._lock:
            if not self.closed:
                self.vectors.close()
            super().discard()

    def drop_backend(self) -> None:
        with self._lock:
            self._check_open()
            self.vectors.drop()

    # --- writes: SQLite is committed by Collection; these push the log to Milvus ------------------
    def _apply(self, added) -> None:
        self._push()

    def _forget(self, ids) -> None:
        self._push()

    def _push(self) -> None:
        """Every log entry after `pushed` into Milvus, a page at a time (under the lock)."""
        while True:
            rows = self._conn.execute("SELECT seq, op, item, modality, leaves, gram, vector FROM log WHERE seq > ? "
                                      "ORDER BY seq LIMIT ?", (self.pushed, PUSH_PAGE)).fetchall()
            if not rows:
                return
            # Ids are never reused and an item is deleted only after it was added, so all additions
            # and then all deletions of a page leave Milvus in the state the log describes.
            for modality in {r[3] for r in rows if r[1] == "add"}:
                mine = [r for r in rows if r[1] == "add" and r[3] == modality]
                n_leaves = len(self.meta["groups"][modality])
                self.vectors.upsert(
                    modality, np.array([r[2] for r in mine], dtype=np.int64),
                    np.stack([np.frombuffer(r[4], np.float32).reshape(n_leaves, self.dim) for r in mine]),
                    np.stack([np.frombuffer(r[5], np.float64).reshape(n_leaves, n_leaves) for r in mine]),
                    np.stack([np.frombuffer(r[6], np.float32) for r in mine]))
            deleted = np.array([r[2] for r in rows if r[1] == "del"], dtype=np.int64)
            for modality in self.meta.get("groups", {}):
                self.vectors.delete(modality, deleted)
            self.pushed = rows[-1][0]

    def _counts(self) -> dict[str, int]:
        """Items per modality from SQLite (a scan of the table), kept until the next write."""
        if self._counted[0] != self.seq:
            counts = dict(self._conn.execute("SELECT modality, count(*) FROM items GROUP BY modality").fetchall())
            self._counted = (self.seq, counts)
        return dict(self._counted[1])

    # --- reads ------------------------------------------------------------------------------------
    def components(self, key: str) -> tuple[str, list[str], np.ndarray, np.ndarray] | None:
        with self._lock:
            self._check_open()
            row = self._conn.execute("SELECT id, modality FROM items WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        keys = self.meta["groups"][row[1]]
        view = self.vectors.fetch(row[1], keys, np.array([row[0]], dtype=np.int64))
        return row[1], keys, view.leaves, view.gram

    def item_vectors(self, plans: Mapping[str, Node], keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self._check_open()
            rows = self._conn.execute(f"SELECT key, id, modality FROM items WHERE key IN ({', '.join('?' * len(keys))})",
                                      list(keys)).fetchall()
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        position = {key: n for n, key in enumerate(keys)}
        for modality in {m for _, _, m in rows}:
            mine = {i: k for k, i, m in rows if m == modality}
            view = self.vectors.fetch(modality, self.meta["groups"][modality], np.array(sorted(mine), dtype=np.int64))
            vectors = search.vectors_of_rows(search.plan_for(plans, modality), view, np.arange(len(view.ids)))
            out[[position[mine[int(i)]] for i in view.ids]] = vectors
        return out, np.isin(np.arange(len(keys)), [position[k] for k, _, _ in rows])

    def search(self, plans: Mapping[str, Node], query_d: np.ndarray, top_k: int, filter_=None,
               modalities: Sequence[str] | None = None, exclude_keys: Sequence[str] = (),
               mode: str | None = None, at_default_mixing: bool = False) -> list[Hit]:
        """As Collection.search; Milvus is called outside the lock (writers do not wait on it). Items always
        score from their components here (`at_default_mixing` changes nothing): Milvus returns no vectors."""
        with self._lock:
            self._check_open()
            allowed, exclude = self._select(filter_, modalities, exclude_keys)
            counts = {m: n for m, n in self._counts().items() if n and (modalities is None or m in modalities)}
            groups = {m: list(self.meta["groups"][m]) for m in counts}
        use_exact = self._scans_all(mode, allowed, sum(counts.values()))
        best: list[Scored] = []
        for modality, keys in groups.items():
            if use_exact and allowed is None:
                views = self.vectors.scan(modality, keys)
            elif use_exact:
                views = [self.vectors.fetch(modality, keys, allowed)]
            else:
                want = self._candidates_wanted(top_k, exclude)
                views = [self.vectors.fetch(modality, keys, self.vectors.candidates(modality, query_d, want, allowed))]
            for view in views:  # the k best so far, a block (or modality) at a time
                best += search.exact({modality: view}, plans, query_d, top_k, None, exclude)
                best = sorted(best, key=lambda hit: (-hit.score, hit.id))[:top_k]
        return self._hits(best)

    # --- snapshots: a Milvus flush, then the log lets go of what Milvus holds ---------------------
    def _snapshot_due(self) -> bool:
        return self._unsnapshotted >= self.snapshot_every  # a flush costs what was written since the last

    def snapshot(self) -> None:
        with self._snapshotting:
            with self._lock:
                self._check_open()
                self._push()
                self.vectors.flush()
                seq, pending = self.pushed, self._unsnapshotted
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('milvus_seq', ?)", (json.dumps(seq),))
                self.meta["milvus_seq"] = seq
                self._conn.execute("DELETE FROM log WHERE seq <= ?", (seq,))
                self._unsnapshotted -= pending
