"""One collection on disk and in memory.

Durability: `items.sqlite` holds the metadata and string-id map (`items`) and a write-ahead log of
components (`log`: leaves, Gram matrix, default-mixing vector per added item; a row per deletion).
A write is one SQLite transaction in WAL journal mode with `synchronous=FULL`, i.e. appended to the
journal and fsynced before the call returns: an acknowledged write survives `kill -9` and power loss,
and a write cut short leaves nothing behind. The in-memory arrays and the FAISS index are rebuilt on
open from the last snapshot (service.index.snapshot) plus the log entries after it; a snapshot lets
the log be truncated.

Concurrency: one lock per collection guards SQLite, the arrays' bookkeeping and FAISS. Callers encode
before calling in (never under the lock); exact scoring runs outside it on immutable row views.

A collection whose index backend is Milvus is a `MilvusCollection` (service.index.milvus_collection):
the same SQLite side and write path, with the components kept in Milvus rather than in these arrays.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bonds.mixing import ResolvedMixing
from bonds.plan import Node
from bonds.space import Space
from service.index import items, search, snapshot
from service.index.ann import Ann
from service.index.errors import CollectionNotFoundError, InvalidCollectionError, SpaceMismatchError
from service.index.groups import Group
from service.index.settings import IndexSettings

log = logging.getLogger(__name__)
TRUNCATE_SLICE = 2000  # log rows deleted per transaction after a snapshot
FILTER_CACHE = 16  # filters whose matching ids are kept until the next write
@dataclass
class Record:
    """One item to store: its components under the space's full mixing and its default-mixing vector."""

    key: str
    modality: str
    metadata: dict[str, Any]
    keys: list[str]  # leaf keys
    leaves: np.ndarray  # (L, d) float32
    gram: np.ndarray  # (L, L) float64
    vector: np.ndarray  # (d,) float32


class Hit(NamedTuple):  # a tuple, not a frozen dataclass: built per hit per search (~1.5 us -> 0.3 us each)
    key: str
    score: float
    modality: str
    metadata: dict[str, Any]


class Collection:
    def __init__(self, folder: Path, conn: sqlite3.Connection, snapshot_every: int, **_backend: Any):
        self.folder, self._conn, self.snapshot_every = folder, conn, snapshot_every
        self._lock = threading.RLock()
        self._snapshotting = threading.RLock()  # one snapshot at a time; close() holds it across its own
        self.meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        self.name: str = self.meta["name"]
        self.dim: int = self.meta["dim"]
        self.settings = IndexSettings.model_validate(self.meta["index"])
        self.groups: dict[str, Group] = {}
        self.ann = Ann(self.settings, self.dim)
        self.seq = 0  # last log entry reflected in memory
        self._unsnapshotted = 0
        self.closed = False
        self.last_snapshot_s = 0.0
        self._snapshot_thread: threading.Thread | None = None
        self._filtered: dict[str, np.ndarray] = {}  # filter -> ids, valid while seq == _filtered_at
        self._filtered_at = -1

    # --- lifecycle --------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, meta: Mapping[str, Any], snapshot_every: int) -> Collection:
        conn = items.connect(folder / "items.sqlite")
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        except BaseException:
            conn.close()  # its folder is about to be removed
            raise
        return cls(folder, conn, snapshot_every)

    @classmethod
    def open(cls, folder: Path, snapshot_every: int, **backend: Any) -> Collection:
        """`backend`: how to reach the collection's vector backend (Milvus: `milvus_uri`, `milvus_token`)."""
        snapshot.clean(folder)
        conn = items.connect(folder / "items.sqlite")
        items.repair_metadata(conn, folder.name)
        collection = cls(folder, conn, snapshot_every, **backend)
        collection._recover()
        return collection

    def _recover(self) -> None:
        """Last snapshot + every log entry after it; then the ANN index and SQLite must agree."""
        saved = snapshot.load(self.folder, self.dim)
        if saved is not None:
            self.groups, self.seq = saved.groups, saved.seq
            self.ann.load_bytes(saved.ann, saved.trained_on)
        rows = self._conn.execute("SELECT seq, op, item, modality, leaves, gram, vector FROM log WHERE seq > ? "
                                  "ORDER BY seq", (self.seq,))
        for seq, op, item, modality, leaves, gram, vector in rows:
            if op == "add":
                group = self._group(modality, self.meta["groups"][modality])
                n_leaves = len(group.keys)
                group.append(np.array([item]), np.frombuffer(leaves, np.float32).reshape(1, n_leaves, self.dim),
                             np.frombuffer(gram, np.float64).reshape(1, n_leaves, n_leaves),
                             np.frombuffer(vector, np.float32).reshape(1, self.dim))
            else:
                for group in self.groups.values():
                    group.kill(np.array([item]))
            self.seq = seq
            self._unsnapshotted += 1
        live = self._live_ids()
        stored = np.array([r[0] for r in self._conn.execute("SELECT id FROM items")], dtype=np.int64)
        if not np.array_equal(np.sort(stored), np.sort(live)):
            raise RuntimeError(f"collection {self.name!r}: {len(stored)} items in SQLite but {len(live)} with components")
        indexed = self.ann.ids()
        self.ann.remove(np.setdiff1d(indexed, live))
        missing = np.setdiff1d(live, indexed)
        for group in self.groups.values():
            rows = group.rows_of(missing)
            rows = rows[rows >= 0]
            self.ann.add(group.ids[rows], group.vectors[rows])

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
            self.closed = True
            self._conn.close()

    def drop_backend(self) -> None:
        """Remove what lives outside the collection's folder (nothing here; Milvus collections there)."""

    def _check_open(self) -> None:
        if self.closed:
            raise CollectionNotFoundError(f"collection {self.name!r} was deleted")

    def _group(self, modality: str, keys: list[str]) -> Group:
        if modality not in self.groups:
            self.groups[modality] = Group(modality, keys, self.dim)
        return self.groups[modality]

    def _live_ids(self) -> np.ndarray:
        found = [g.live_ids() for g in self.groups.values()]
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    # --- description ------------------------------------------------------------------------------
    def check_space(self, space_id: str) -> None:
        if space_id != self.meta["space_id"]:
            raise SpaceMismatchError(
                f"collection {self.name!r} holds vectors of space {self.meta['space']!r} with id {self.meta['space_id']}, "
                f"but the space now served under that name has id {space_id}: its encoders or bonds changed; "
                "re-create the collection and add the items again"
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
            counts = {m: n for m, n in self._counts().items() if n}
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
            replaced, added = [], []
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                groups = dict(self.meta.get("groups", {}))
                for r in latest.values():
                    if groups.setdefault(r.modality, r.keys) != r.keys:
                        raise SpaceMismatchError(f"{r.modality} components with leaves {r.keys} do not match the "
                                                 f"collection's {groups[r.modality]}")
                    old = self._conn.execute("SELECT id FROM items WHERE key = ?", (r.key,)).fetchone()
                    if old:
                        self._conn.execute("DELETE FROM items WHERE id = ?", old)
                        self._conn.execute("INSERT INTO log (op, item) VALUES ('del', ?)", old)
                        replaced.append(old[0])
                    item = self._conn.execute("INSERT INTO items (key, modality, metadata) VALUES (?, ?, ?)",
                                              (r.key, r.modality, items.dump_metadata(r.metadata))).lastrowid
                    self._conn.execute(
                        "INSERT INTO log (op, item, modality, leaves, gram, vector) VALUES ('add', ?, ?, ?, ?, ?)",
                        (item, r.modality, r.leaves.astype(np.float32).tobytes(), r.gram.astype(np.float64).tobytes(),
                         r.vector.astype(np.float32).tobytes()))
                    added.append((item, r))
                if groups != self.meta.get("groups"):
                    self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('groups', ?)", (json.dumps(groups),))
                seq = self._conn.execute("SELECT max(seq) FROM log").fetchone()[0]
                self._conn.execute("COMMIT")  # the acknowledgement point: journal appended and fsynced
            except BaseException as exc:
                items.roll_back(self._conn, self.name, exc)
                raise
            self.meta["groups"] = groups
            self.seq = seq or self.seq
            self._unsnapshotted += len(added) + len(replaced)
            self._forget(replaced)
            self._apply(added)
        self._maybe_snapshot()
        return len(latest)

    def _apply(self, added: list[tuple[int, Record]]) -> None:
        """Committed additions into the arrays and the ANN index (under the lock)."""
        for modality in {r.modality for _, r in added}:
            mine = [(i, r) for i, r in added if r.modality == modality]
            ids = np.array([i for i, _ in mine], dtype=np.int64)
            vectors = np.stack([r.vector for _, r in mine]).astype(np.float32)
            self._group(modality, self.meta["groups"][modality]).append(
                ids, np.stack([r.leaves for _, r in mine]), np.stack([r.gram for _, r in mine]), vectors)
            self.ann.add(ids, vectors)

    def _validate(self, r: Record) -> None:
        n_leaves = len(r.keys)
        if r.leaves.shape != (n_leaves, self.dim) or r.gram.shape != (n_leaves, n_leaves) or r.vector.shape != (self.dim,):
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
            found = []
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for key in dict.fromkeys(keys):
                    row = self._conn.execute("SELECT id FROM items WHERE key = ?", (key,)).fetchone()
                    if row:
                        self._conn.execute("DELETE FROM items WHERE id = ?", row)
                        self._conn.execute("INSERT INTO log (op, item) VALUES ('del', ?)", row)
                        found.append((key, row[0]))
                seq = self._conn.execute("SELECT max(seq) FROM log").fetchone()[0]
                self._conn.execute("COMMIT")
            except BaseException as exc:
                items.roll_back(self._conn, self.name, exc)
                raise
            self.seq = seq or self.seq
            self._unsnapshotted += len(found)
            self._forget([i for _, i in found])
        self._maybe_snapshot()
        return [key for key, _ in found]

    def _forget(self, ids: list[int]) -> None:
        ids_arr = np.array(ids, dtype=np.int64)
        for group in self.groups.values():
            group.kill(ids_arr)
        self.ann.remove(ids_arr)

    def _counts(self) -> dict[str, int]:
        """Live items per modality (under the lock)."""
        return {m: g.live for m, g in self.groups.items()}

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
            group = self.groups[row[1]]
            at = int(group.rows_of(np.array([row[0]]))[0])
            return row[1], group.keys, group.leaves[at: at + 1].copy(), group.gram[at: at + 1].copy()

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
            groups = {m: g for m, g in self.groups.items() if g.live and (modalities is None or m in modalities)}
            use_exact = self._scans_all(mode, allowed, sum(g.live for g in groups.values()))
            if use_exact:
                views = {m: g.view() for m, g in groups.items()}
            elif at_default_mixing:
                scores, found = self.ann.search(query_d, top_k + len(exclude), allowed)
            else:  # candidates are checked alive here, under the lock; the re-score never reads the mask
                _, found = self.ann.search(query_d, self._candidates_wanted(top_k, exclude), allowed)
                candidates = self._rows_of(found[0][found[0] >= 0], groups)
                views = {m: groups[m].view(freeze_alive=False) for m in candidates}
        scoring = None if at_default_mixing else plans
        if use_exact:
            best = search.exact(views, scoring, query_d, top_k, allowed, exclude)
        elif at_default_mixing:
            best = search.indexed(found[0], scores[0], top_k, exclude)
        else:
            best = search.rerank(views, plans, query_d, top_k, candidates, exclude)
        return self._hits(best)

    def _scans_all(self, mode: str | None, allowed: np.ndarray | None, live: int) -> bool:
        """Exact search: asked for, or (auto) few enough items searched that a scan beats ANN + re-score."""
        mode = mode or self.settings.search
        searched = len(allowed) if allowed is not None else live
        return mode == "exact" or (mode == "auto" and searched <= self.settings.exact_below)

    def _candidates_wanted(self, top_k: int, exclude: set[int]) -> int:
        return self.settings.rerank_factor * top_k + len(exclude)  # excluded items may take candidate places

    def item_vectors(self, plans: Mapping[str, Node], keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors `(len(keys), d)` of stored items under `plans`, rebuilt from their components, and which
        keys were found `(len(keys),)`: an item deleted since the caller saw it has a zero row there."""
        with self._lock:
            self._check_open()
            ids = items.ids_of(self._conn, list(keys))
            located = self._rows_of(np.array(list(ids.values()), dtype=np.int64))
            views = {m: self.groups[m].view() for m in located}
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        position = {ids[k]: n for n, k in enumerate(keys) if k in ids}
        for modality, rows in located.items():
            view = views[modality]
            vectors = search.vectors_of_rows(search.plan_for(plans, modality), view, rows)
            out[[position[int(i)] for i in view.ids[rows]]] = vectors
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

    def _rows_of(self, ids: np.ndarray, groups: Mapping[str, Group] | None = None) -> dict[str, np.ndarray]:
        """Live item ids -> their rows, per modality group (under the lock: rows move on compaction)."""
        rows: dict[str, np.ndarray] = {}
        for modality, group in (self.groups if groups is None else groups).items():
            found = group.rows_of(ids)
            found = found[found >= 0]
            if len(found):
                rows[modality] = found
        return rows

    def _hits(self, best: list[search.Scored]) -> list[Hit]:
        with self._lock:
            self._check_open()
            found = items.describe(self._conn, [s.id for s in best])
        # An item deleted since its score was taken is left out rather than returned stale.
        return [Hit(found[s.id][0], s.score, *found[s.id][1:]) for s in best if s.id in found]

    # --- snapshots --------------------------------------------------------------------------------
    def _snapshot_due(self) -> bool:
        """Once the log holds `snapshot_every` entries and half as many as there are live items (each
        snapshot rewrites every array, so this keeps the total cost linear)."""
        live = sum(g.live for g in self.groups.values())
        return self._unsnapshotted >= max(self.snapshot_every, live // 2)

    def _maybe_snapshot(self) -> None:
        """Snapshot in a background thread when one is due."""
        with self._lock:
            if not self._snapshot_due() or self._snapshot_thread is not None:
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
            log.exception("snapshot of collection %r failed", self.name)
        finally:
            self._snapshot_thread = None

    def snapshot(self) -> None:
        """Persist the arrays and ANN index as of now, then truncate the log behind them."""
        with self._snapshotting:
            with self._lock:
                self._check_open()
                if any(g.n > 2 * g.live for g in self.groups.values()) or self.ann.stale():
                    self.groups = {m: g.compacted() for m, g in self.groups.items()}
                    if self.ann.stale():
                        live = [(g.ids[: g.n], g.vectors[: g.n]) for g in self.groups.values()]
                        self.ann.rebuild(np.concatenate([i for i, _ in live] or [np.zeros(0, np.int64)]),
                                         np.concatenate([v for _, v in live] or [np.zeros((0, self.dim), np.float32)]))
                seq, views = self.seq, {m: g.view() for m, g in self.groups.items()}
                ann, trained_on, pending = self.ann.to_bytes(), self.ann.trained_on, self._unsnapshotted
            started = time.monotonic()
            snapshot.save(self.folder, seq, views, ann, trained_on)  # outside the lock: views are immutable
            # Truncate in slices, taking the lock per slice: freeing blob pages is slow, and searches
            # and writes should interleave with it rather than wait for all of it.
            while True:
                with self._lock:
                    if self.closed:
                        break
                    deleted = self._conn.execute("DELETE FROM log WHERE seq IN (SELECT seq FROM log WHERE seq <= ? "
                                                 "LIMIT ?)", (seq, TRUNCATE_SLICE)).rowcount
                if deleted < TRUNCATE_SLICE:
                    break
            with self._lock:
                self._unsnapshotted -= pending
            snapshot.clean(self.folder)
            self.last_snapshot_s = time.monotonic() - started
