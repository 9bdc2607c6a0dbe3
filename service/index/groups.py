"""In-memory components of one collection, one group of arrays per item modality.

Items of one modality share their leaf keys (the leaves of `space.plan(modality, full_mixing)`), so a
group stacks them: leaves `(n, L, d)`, Gram matrices `(n, L, L)`, and the vector under the collection's
default mixing `(n, d)` that the ANN index holds. Rows are append-only and never rewritten: an upsert
appends a row and marks the old one dead. That is what lets a search read a group without holding the
collection's lock: it takes a `GroupView` (the first n rows, a copy of the alive mask) and any later
append writes past n or into fresh arrays.

Item ids come from SQLite's AUTOINCREMENT (never reused, never lower than an earlier one) and a
replaced item gets a new id, so rows hold ascending ids: an id's row is a binary search away, with no
per-item dict (a million-entry dict of ints is ~100 MB, and a search maps its candidates in one call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupView:
    """A consistent, read-only picture of a group at one moment."""

    modality: str
    keys: list[str]
    ids: np.ndarray  # (n,) int64 item ids
    leaves: np.ndarray  # (n, L, d) float32
    gram: np.ndarray  # (n, L, L) float64
    vectors: np.ndarray  # (n, d) float32, under the collection's default mixing
    alive: np.ndarray  # (n,) bool

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.alive)


class Group:
    """Growable arrays for the items of one modality; see the module docstring for the rules."""

    def __init__(self, modality: str, keys: list[str], dim: int, capacity: int = 64):
        self.modality, self.keys, self.dim = modality, list(keys), dim
        n_leaves = len(keys)
        self.ids = np.zeros(capacity, dtype=np.int64)
        self.leaves = np.zeros((capacity, n_leaves, dim), dtype=np.float32)
        self.gram = np.zeros((capacity, n_leaves, n_leaves), dtype=np.float64)
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.n = 0
        self.live = 0

    @classmethod
    def from_arrays(cls, modality: str, keys: list[str], ids, leaves, gram, vectors) -> Group:
        group = cls(modality, keys, leaves.shape[2], capacity=max(64, len(ids)))
        group.append(ids, leaves, gram, vectors)
        return group

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * len(self.ids))
        # Fresh arrays, never resized in place: views handed out earlier keep pointing at the old ones.
        for name in ("ids", "leaves", "gram", "vectors", "alive"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def append(self, ids: np.ndarray, leaves: np.ndarray, gram: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        k = len(ids)
        if leaves.shape[1:] != self.leaves.shape[1:] or gram.shape[1:] != self.gram.shape[1:]:
            raise ValueError(
                f"{self.modality}: components of shape {leaves.shape[1:]} do not fit {self.leaves.shape[1:]}")
        if k and (np.any(np.diff(ids) <= 0) or (self.n and ids[0] <= self.ids[self.n - 1])):
            raise ValueError(f"{self.modality}: item ids must be appended in ascending order")
        if self.n + k > len(self.ids):
            self._grow(self.n + k)
        rows = slice(self.n, self.n + k)
        self.ids[rows], self.leaves[rows], self.gram[rows], self.vectors[rows] = ids, leaves, gram, vectors
        self.alive[rows] = True
        self.n += k
        self.live += k

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The row of each of `ids` that is live here, -1 for the others."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.n:
            return np.full(len(ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ids[: self.n], ids), self.n - 1)
        return np.where((self.ids[at] == ids) & self.alive[at], at, -1)

    def live_ids(self) -> np.ndarray:
        return self.ids[: self.n][self.alive[: self.n]]

    def kill(self, ids: np.ndarray) -> int:
        """Marks those of `ids` live here dead (one search for a whole deletion); returns how many were."""
        rows = self.rows_of(ids)
        rows = np.unique(rows[rows >= 0])
        self.alive[rows] = False
        self.live -= len(rows)
        return len(rows)

    def view(self, freeze_alive: bool = True) -> GroupView:
        """`freeze_alive=False` leaves the alive mask live (later deletions show through): for a caller that
        picked its rows under the lock and never reads the mask, which spares a copy of n flags per search."""
        n = self.n
        alive = self.alive[:n].copy() if freeze_alive else self.alive[:n]
        return GroupView(self.modality, self.keys, self.ids[:n], self.leaves[:n], self.gram[:n], self.vectors[:n],
                         alive)

    def compacted(self) -> Group:
        """A copy holding only the live rows (new arrays: open views are unaffected)."""
        rows = np.flatnonzero(self.alive[: self.n])
        return Group.from_arrays(self.modality, self.keys, self.ids[rows], self.leaves[rows], self.gram[rows],
                                 self.vectors[rows])
