"""A collection's components in the service's memory, with FAISS candidates (index backend `faiss`).

The components of each item modality are stacked in a `Group` (service.index.groups); the FAISS index
(service.index.ann) holds every item's vector under the collection's default mixing. On open they are
rebuilt from the last snapshot (service.index.snapshot) plus the log entries after it; a snapshot
writes the arrays and the index to disk, after which the collection truncates the log behind it.
Searches take immutable row views under the collection's lock and score them outside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from bonds.plan import Node
from service.index import search, snapshot
from service.index.ann import Ann
from service.index.backend import Search
from service.index.groups import Group
from service.index.index_settings import IndexSettings
from service.index.log import LogReader, Record
from service.index.search import Scored


class FaissBackend:
    def __init__(self, folder: Path, settings: IndexSettings, dim: int):
        self.folder, self.settings, self.dim = folder, settings, dim
        self.groups: dict[str, Group] = {}
        self.ann = Ann(settings, dim)

    # --- lifecycle --------------------------------------------------------------------------------
    def recover(self, log: LogReader, counts: Mapping[str, int]) -> tuple[int, int]:
        """Last snapshot + every log entry after it; then the ANN index and SQLite must agree."""
        snapshot.clean(self.folder)
        seq, pending = 0, 0
        saved = snapshot.load(self.folder, self.dim)
        if saved is not None:
            self.groups, seq = saved.groups, saved.seq
            self.ann.load_bytes(saved.ann, saved.trained_on)
        for entry in log.entries(seq):
            if entry.op == "add":
                self._group(entry.modality, log.groups[entry.modality]).append(
                    np.array([entry.item]), entry.leaves[None], entry.gram[None], entry.vector[None])
            else:
                for group in self.groups.values():
                    group.kill(np.array([entry.item]))
            seq, pending = entry.seq, pending + 1
        live, stored = self._live_ids(), log.item_ids()
        if not np.array_equal(stored, np.sort(live)):
            raise RuntimeError(f"{len(stored)} items in SQLite but {len(live)} with components")
        indexed = self.ann.ids()
        self.ann.remove(np.setdiff1d(indexed, live))
        missing = np.setdiff1d(live, indexed)
        for group in self.groups.values():
            rows = group.rows_of(missing)
            rows = rows[rows >= 0]
            self.ann.add(group.ids[rows], group.vectors[rows])
        return seq, pending

    def close(self) -> None:
        pass  # nothing but memory and the collection's own folder

    def drop(self) -> None:
        pass

    def _group(self, modality: str, keys: list[str]) -> Group:
        if modality not in self.groups:
            self.groups[modality] = Group(modality, keys, self.dim)
        return self.groups[modality]

    def _live_ids(self) -> np.ndarray:
        found = [g.live_ids() for g in self.groups.values()]
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    # --- writes -----------------------------------------------------------------------------------
    def apply(self, added: list[tuple[int, Record]], removed: np.ndarray) -> None:
        for group in self.groups.values():
            group.kill(removed)
        self.ann.remove(removed)
        for modality in {r.modality for _, r in added}:
            mine = [(i, r) for i, r in added if r.modality == modality]
            ids = np.array([i for i, _ in mine], dtype=np.int64)
            vectors = np.stack([r.vector for _, r in mine]).astype(np.float32)
            self._group(modality, mine[0][1].keys).append(
                ids, np.stack([r.leaves for _, r in mine]), np.stack([r.gram for _, r in mine]), vectors)
            self.ann.add(ids, vectors)

    # --- reads ------------------------------------------------------------------------------------
    def components(self, item: int, modality: str, keys: list[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        group = self.groups[modality]
        at = int(group.rows_of(np.array([item]))[0])
        leaves, gram = group.leaves[at: at + 1].copy(), group.gram[at: at + 1].copy()
        return lambda: (leaves, gram)

    def vectors(self, plans: Mapping[str, Node],
                located: Mapping[str, np.ndarray]) -> Callable[[], list[tuple[np.ndarray, np.ndarray]]]:
        rows = self._rows_of(np.concatenate([*located.values(), np.zeros(0, np.int64)]))
        views = {m: self.groups[m].view() for m in rows}

        def rebuild() -> list[tuple[np.ndarray, np.ndarray]]:
            return [(views[m].ids[r], search.vectors_of_rows(search.plan_for(plans, m), views[m], r))
                    for m, r in rows.items()]

        return rebuild

    def searcher(self, s: Search) -> Callable[[], list[Scored]]:
        groups = {m: self.groups[m] for m in s.groups}
        if s.exact:
            views = {m: g.view() for m, g in groups.items()}
            scoring = None if s.at_default_mixing else s.plans
            return lambda: search.exact(views, scoring, s.query_d, s.top_k, s.allowed, s.exclude)
        if s.at_default_mixing:  # the index holds these very vectors: its scores are exact
            scores, found = self.ann.search(s.query_d, s.top_k + len(s.exclude), s.allowed)
            return lambda: search.indexed(found[0], scores[0], s.top_k, s.exclude)
        # candidates are checked alive here, under the lock; the re-score never reads the mask
        _, found = self.ann.search(s.query_d, s.candidates, s.allowed)
        candidates = self._rows_of(found[0][found[0] >= 0], groups)
        views = {m: groups[m].view(freeze_alive=False) for m in candidates}
        return lambda: search.rerank(views, s.plans, s.query_d, s.top_k, candidates, s.exclude)

    def _rows_of(self, ids: np.ndarray, groups: Mapping[str, Group] | None = None) -> dict[str, np.ndarray]:
        """Live item ids -> their rows, per modality group (under the lock: rows move on compaction)."""
        rows: dict[str, np.ndarray] = {}
        for modality, group in (self.groups if groups is None else groups).items():
            found = group.rows_of(ids)
            found = found[found >= 0]
            if len(found):
                rows[modality] = found
        return rows

    # --- snapshots --------------------------------------------------------------------------------
    def snapshot_due(self, pending: int, live: int) -> bool:
        """Once the log holds `snapshot_every` entries and half as many as there are live items (each
        snapshot rewrites every array, so this keeps the total cost linear)."""
        return pending >= live // 2

    def snapshot(self, seq: int) -> Callable[[], int]:
        """Compact what deletions left behind, then write the arrays and ANN index (outside the lock: the
        views are immutable) as the snapshot after log entry `seq`."""
        if any(g.n > 2 * g.live for g in self.groups.values()) or self.ann.stale():
            self.groups = {m: g.compacted() for m, g in self.groups.items()}
            if self.ann.stale():
                live = [(g.ids[: g.n], g.vectors[: g.n]) for g in self.groups.values()]
                self.ann.rebuild(np.concatenate([i for i, _ in live] or [np.zeros(0, np.int64)]),
                                 np.concatenate([v for _, v in live] or [np.zeros((0, self.dim), np.float32)]))
        views = {m: g.view() for m, g in self.groups.items()}
        ann, trained_on = self.ann.to_bytes(), self.ann.trained_on

        def persist() -> int:
            snapshot.save(self.folder, seq, views, ann, trained_on)
            snapshot.clean(self.folder)  # the snapshots before this one
            return seq

        return persist
