"""One collection: its SQLite file (the source of truth) and the vector backend that holds its components.

Durability: `items.sqlite` holds the metadata and string-id map (`items`) and the write-ahead log of
components (service.index.log). A write is one SQLite transaction in WAL journal mode with
`synchronous=FULL`, i.e. appended to the journal and fsynced before the call returns: an acknowledged
write survives `kill -9` and power loss, and a write cut short leaves nothing behind. The vector backend
(service.index.backend: FAISS in memory, or Milvus) is told of each committed write and rebuilt from the
log on open; once it holds the log durably itself (a snapshot), the log is truncated behind it.

Concurrency: one lock per collection guards SQLite and the backend's bookkeeping. Callers encode before
calling in (never under the lock); scoring and calls to Milvus run outside it (the backend's readers).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bonds.mixing import ResolvedMixing
from bonds.plan import Node
from bonds.space import Space
from service.index import items, log
from service.index.backend import Search, VectorBackend
from service.index.errors import CollectionNotFoundError, InvalidCollectionError, SpaceMismatchError
from service.index.index_settings import IndexSettings
from service.index.log import LogReader, Record
from service.index.search import Scored

logger = logging.getLogger(__name__)
TRUNCATE_SLICE = 2000  # log rows deleted per transaction after a snapshot
FILTER_CACHE = 16  # filters whose matching ids are kept until the next write


class Hit(NamedTuple):  # a tuple, not a frozen dataclass: built per hit per search (~1.5 us -> 0.3 us each)
    key: str
    score: float
    modality: str
    metadata: dict[str, Any]


def open_backend(folder: Path, settings: IndexSettings, dim: int, meta: Mapping[str, Any],
                 **options: Any) -> VectorBackend:
    """The backend a collection's settings name; `options`: how to reach it (Milvus: `milvus_uri`,
    `milvus_token`)."""
    if settings.backend == "milvus":
        from service.index.milvus_backend import MilvusBackend

        return MilvusBackend(settings, dim, meta, **options)
    from service.index.faiss_backend import FaissBackend

    return FaissBackend(folder, settings, dim)


class Collection:
    def __init__(self, folder: Path, conn: sqlite3.Connection, snapshot_every: int, **backend: Any):
        """`backend`: how to reach the collection's vector backend (Milvus: `milvus_uri`, `milvus_token`)."""
        self.folder, self._conn, self.snapshot_every = folder, conn, snapshot_every
        self._lock = threading.RLock()
        self._snapshotting = threading.RLock()  # one snapshot at a time; close() holds it across its own
        self.meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        self.meta.setdefault("groups", {})
        self.name: str = self.meta["name"]
        self.dim: int = self.meta["dim"]
        self.settings = IndexSettings.model_validate(self.meta["index"])
        self._counts = dict(conn.execute("SELECT modality, count(*) FROM items GROUP BY modality").fetchall())
        self.seq = 0  # last log entry reflected in the backend
        self._unsnapshotted = 0
        self.closed = False
        self.last_snapshot_s = 0.0
        self._snapshot_thread: threading.Thread | None = None
        self._filtered: dict[str, np.ndarray] = {}  # filter -> ids, valid while seq == _filtered_at
        self._filtered_at = -1
        with _named(self.name):
            self.backend: VectorBackend = open_backend(folder, self.settings, self.dim, self.meta, **backend)

    # --- lifecycle --------------------------------------------------------------------------------
    @staticmethod
    def create(folder: Path, meta: Mapping[str, Any]) -> None:
        """A new collection's SQLite file in `folder`, holding `meta`; `open` it to use it."""
        conn = items.connect(folder / "items.sqlite")
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        finally:
            conn.close()

    @classmethod
    def open(cls, folder: Path, snapshot_every: int, **backend: Any) -> Collection:
        """The collection in `folder`, its backend brought to the state the log describes."""
        conn = items.connect(folder / "items.sqlite")
        try:
            items.repair_metadata(conn, folder.name)
            collection = cls(folder, conn, snapshot_every, **backend)
        except BaseException:
            conn.close()
            raise
        with _named(collection.name):
            reader = LogReader(conn, collection.dim, collection.meta["groups"])
            collection.seq, collection._unsnapshotted = collection.backend.recover(reader, collection._counts)
        return collection

    def close(self) -> None:
        """Snapshot what the log holds (so the next open replays nothing) and let go of the files."""
        with self._snapshotting, self._lock:  # the order snapshot() takes them in
            if self.closed:
                return
            if self._unsnapshotted:
                self.snapshot()
            self.discard()

    def discard(self) -> None:
        """Close without a snapshot (the collection is being deleted); later calls get a 404."""
        with self._snapshotting, self._lock:  # a running snapshot finishes first: its folder is about to go
            if not self.closed:
                self.backend.close()
            self.closed = True
            self._conn.close()

    def drop_backend(self) -> None:
        """Remove what lives outside the collection's folder (Milvus collections)."""
        with self._lock:
            self._check_open()
            self.backend.drop()

    def _check_open(self) -> None:
        if self.closed:
            raise CollectionNotFoundError(f"collection {self.name!r} was deleted")

    # --- description ------------------------------------------------------------------------------
    def check_space(self, space_id: str) -> None:
        if space_id != self.meta["space_id"]:
            raise SpaceMismatchError(
                f"collection {self.name!r} holds vectors of space {self.meta['space']!r} with id "
                f"{self.meta['space_id']}, but the space now served under that name has id {space_id}: its "
                "encoders or bonds changed; re-create the collection and add the items again"
            )

    def default_mixing(self, space: Space) -> ResolvedMixing:
        """The mixing of the vectors this collection stores and indexes (pinned when it was created)."""
        return space.resolve(self.meta["mixing"])

    def is_default_mixing(self, space: Space, plans: Mapping[str, Node]) -> bool:
        """Whether `plans` are this collection's default mixing, whose vectors it stores and indexes: a search
        under it scores those vectors directly instead of re-scoring candidates from their components."""
        default = space.resolve(self.meta["mixing"])
        return all(plan == space.plan(modality, default) for modality, plan in plans.items())

    def info(self) -> dict[str, Any]:
        with self._lock:
            self._check_open()
            counts = {m: n for m, n in self._counts.items() if n}
        return {"name": self.name, "space": self.meta["space"], "space_id": self.meta["space_id"], "dim": self.dim,
                "count": sum(counts.values()), "modalities": counts, "index": self.settings.model_dump(),
                "mixing": self.meta["mixing"], "created": self.meta["created"]}

    # --- writes -----------------------------------------------------------------------------------
    def upsert(self, space_id: str, records: Sequence[Record]) -> int:
        """Store (or replace, by key) every record in one durable transaction; returns how many."""
        self.check_space(space_id)
        latest = {r.key: r for r in records}  # the last of repeated keys wins
        if not latest:
            return 0
        for r in latest.values():
            self._validate(r)
        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                groups = self._groups_with(latest.values())
                replaced = self._remove([r.key for r in latest.values()])
                added = []
                for r in latest.values():
                    item = self._conn.execute("INSERT INTO items (key, modality, metadata) VALUES (?, ?, ?)",
                                              (r.key, r.modality, items.dump_metadata(r.metadata))).lastrowid
                    log.append_add(self._conn, item, r)
                    added.append((item, r))
                if groups != self.meta["groups"]:
                    self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('groups', ?)", (json.dumps(groups),))
                seq = log.last_seq(self._conn)
                self._conn.execute("COMMIT")  # the acknowledgement point: journal appended and fsynced
            except BaseException as exc:
                items.roll_back(self._conn, self.name, exc)
                raise
            self.meta["groups"].update(groups)  # the same dict the backend's log reader holds
            self._committed(seq, replaced, added)
        self._maybe_snapshot()
        return len(latest)

    def _groups_with(self, records: Any) -> dict[str, list[str]]:
        """The collection's modality -> leaf keys with those of `records`, which must match what is there."""
        groups = dict(self.meta["groups"])
        for r in records:
            if groups.setdefault(r.modality, r.keys) != r.keys:
                raise SpaceMismatchError(f"{r.modality} components with leaves {r.keys} do not match the "
                                         f"collection's {groups[r.modality]}")
        return groups

    def _remove(self, keys: Sequence[str]) -> list[tuple[str, int, str]]:
        """Delete the items of `keys` that exist, logging each deletion (inside the caller's transaction);
        returns `(key, id, modality)` of those."""
        found = []
        for key in dict.fromkeys(keys):
            row = self._conn.execute("SELECT id, modality FROM items WHERE key = ?", (key,)).fetchone()
            if row:
                self._conn.execute("DELETE FROM items WHERE id = ?", (row[0],))
                log.append_delete(self._conn, row[0])
                found.append((key, row[0], row[1]))
        return found

    def _committed(self, seq: int, removed: list[tuple[str, int, str]], added: list[tuple[int, Record]]) -> None:
        """A committed write into the counts and the backend (under the lock)."""
        self.seq = seq or self.seq
        self._unsnapshotted += len(removed) + len(added)
        for _, _, modality in removed:
            self._counts[modality] -= 1
        for _, r in added:
            self._counts[r.modality] = self._counts.get(r.modality, 0) + 1
        self.backend.apply(added, np.array([item for _, item, _ in removed], dtype=np.int64))

    def _validate(self, r: Record) -> None:
        n_leaves = len(r.keys)
        shapes = (r.leaves.shape, r.gram.shape, r.vector.shape)
        if shapes != ((n_leaves, self.dim), (n_leaves, n_leaves), (self.dim,)):
            raise InvalidCollectionError(f"item {r.key!r}: components do not fit a {self.dim}-d collection")
        if not (np.isfinite(r.leaves).all() and np.isfinite(r.vector).all()):
            raise InvalidCollectionError(f"item {r.key!r}: vector values must be finite")
        try:
            items.dump_metadata(r.metadata)
        except ValueError:
            raise InvalidCollectionError(f"item {r.key!r}: metadata values must be finite numbers") from None

    def delete(self, keys: Sequence[str]) -> list[str]:
        """Remove items by key in one durable transaction; returns the keys that existed."""
        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                found = self._remove(keys)
                seq = log.last_seq(self._conn)
                self._conn.execute("COMMIT")
            except BaseException as exc:
                items.roll_back(self._conn, self.name, exc)
                raise
            self._committed(seq, found, [])
        self._maybe_snapshot()
        return [key for key, _, _ in found]

    # --- reads ------------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            self._check_open()
            row = self._conn.execute("SELECT modality, metadata FROM items WHERE key = ?", (key,)).fetchone()
        return None if row is None else {"id": key, "modality": row[0], "metadata": json.loads(row[1])}

    def components(self, key: str) -> tuple[str, list[str], np.ndarray, np.ndarray] | None:
        """`(modality, leaf keys, leaves (1, L, d), gram (1, L, L))` of one stored item."""
        with self._lock:
            self._check_open()
            row = self._conn.execute("SELECT id, modality FROM items WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            keys = self.meta["groups"][row[1]]
            read = self.backend.components(row[0], row[1], keys)
        leaves, gram = read()
        return row[1], keys, leaves, gram

    def search(self, plans: Mapping[str, Node], query_d: np.ndarray, top_k: int, filter_=None,
               modalities: Sequence[str] | None = None, exclude_keys: Sequence[str] = (),
               mode: str | None = None, at_default_mixing: bool = False) -> list[Hit]:
        """The top_k items by exact score under `plans` (one per item modality), filters applied first.

        `at_default_mixing`: the caller says `plans` are the collection's default mixing, whose vectors are
        stored and indexed: then ANN scores are already exact (no candidates to re-score, only top_k
        fetched) and a scan takes one product per item instead of the components' arithmetic.
        """
        with self._lock:
            self._check_open()
            allowed, exclude = self._select(filter_, modalities, exclude_keys)
            live = {m: n for m, n in self._counts.items() if n and (modalities is None or m in modalities)}
            exact = self._scans_all(mode, allowed, sum(live.values()))
            candidates = self.settings.rerank_factor * top_k + len(exclude)  # excluded items may take places
            groups = {m: list(self.meta["groups"][m]) for m in live}
            score = self.backend.searcher(Search(plans, query_d, top_k, groups, allowed, exclude, exact,
                                                 at_default_mixing, candidates))
        return self._hits(score())

    def _scans_all(self, mode: str | None, allowed: np.ndarray | None, live: int) -> bool:
        """Exact search: asked for, or (auto) few enough items searched that a scan beats ANN + re-score."""
        mode = mode or self.settings.search
        searched = len(allowed) if allowed is not None else live
        return mode == "exact" or (mode == "auto" and searched <= self.settings.exact_below)

    def item_vectors(self, plans: Mapping[str, Node], keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors `(len(keys), d)` of stored items under `plans`, rebuilt from their components, and which
        keys were found `(len(keys),)`: an item deleted since the caller saw it has a zero row there."""
        with self._lock:
            self._check_open()
            rows = items.locate(self._conn, list(keys))
            located: dict[str, list[int]] = {}
            for _, item, modality in rows:
                located.setdefault(modality, []).append(item)
            rebuild = self.backend.vectors(plans, {m: np.array(i, dtype=np.int64) for m, i in located.items()})
        ids = {key: item for key, item, _ in rows}
        position = {ids[k]: n for n, k in enumerate(keys) if k in ids}
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        for found, vectors in rebuild():
            out[[position[int(i)] for i in found]] = vectors
        return out, np.array([k in ids for k in keys], dtype=bool)

    def _select(self, filter_, modalities, exclude_keys) -> tuple[np.ndarray | None, set[int]]:
        """Ids allowed by the filter and modalities (None: all), and ids to leave out.

        A filter costs a JSON parse per item in SQLite (~100 ms per 100k items), so its ids are kept
        until the next write: re-running one search under new mixings (the playground's sliders) pays once.
        """
        exclude = set(items.ids_of(self._conn, list(exclude_keys)).values())
        if not filter_ and modalities is None:
            return None, exclude
        if self._filtered_at != self.seq:
            self._filtered.clear()
            self._filtered_at = self.seq
        key = json.dumps([filter_, modalities], sort_keys=True, default=str)
        if key not in self._filtered:
            if len(self._filtered) >= FILTER_CACHE:
                self._filtered.pop(next(iter(self._filtered)))
            self._filtered[key] = items.select(self._conn, filter_, modalities)
        return self._filtered[key], exclude

    def _hits(self, best: list[Scored]) -> list[Hit]:
        with self._lock:
            self._check_open()
            found = items.describe(self._conn, [s.id for s in best])
        # An item deleted since its score was taken is left out rather than returned stale.
        return [Hit(found[s.id][0], s.score, *found[s.id][1:]) for s in best if s.id in found]

    # --- snapshots --------------------------------------------------------------------------------
    def _maybe_snapshot(self) -> None:
        """Snapshot in a background thread when one is due."""
        with self._lock:
            due = self._unsnapshotted >= self.snapshot_every and self.backend.snapshot_due(
                self._unsnapshotted, sum(self._counts.values()))
            if not due or self._snapshot_thread is not None:
                return
            self._snapshot_thread = threading.Thread(target=self._background_snapshot, daemon=True,
                                                     name=f"snapshot-{self.name}")
        self._snapshot_thread.start()

    def _background_snapshot(self) -> None:
        try:
            self.snapshot()
        except CollectionNotFoundError:
            pass  # deleted meanwhile
        except Exception:  # the log still holds everything: nothing is lost, the next try may succeed
            logger.exception("snapshot of collection %r failed", self.name)
        finally:
            self._snapshot_thread = None

    def snapshot(self) -> None:
        """Have the backend persist its state as of now, then truncate the log behind it."""
        with self._snapshotting:
            with self._lock:
                self._check_open()
                persist, pending = self.backend.snapshot(self.seq), self._unsnapshotted
            started = time.monotonic()
            held = persist()  # outside the lock: what it writes was captured under it
            # Truncate in slices, taking the lock per slice: freeing blob pages is slow, and searches
            # and writes should interleave with it rather than wait for all of it.
            while True:
                with self._lock:
                    if self.closed:
                        break
                    deleted = log.truncate(self._conn, held, TRUNCATE_SLICE)
                if deleted < TRUNCATE_SLICE:
                    break
            with self._lock:
                self._unsnapshotted -= pending
            self.last_snapshot_s = time.monotonic() - started


@contextmanager
def _named(name: str) -> Iterator[None]:
    """A backend's failed check on open (a RuntimeError) raised again naming the collection."""
    try:
        yield
    except RuntimeError as exc:
        raise RuntimeError(f"collection {name!r}: {exc}") from None
