"""The write-ahead log of a collection's components, in its SQLite file: the source of truth.

A row per added item (`op='add'`: its leaves, Gram matrix and default-mixing vector as float32, float64
and float32 bytes) and per deletion (`op='del'`), ordered by `seq` (AUTOINCREMENT: never reused). An
entry is appended in the transaction that changes `items` (service.index.collection), so it is durable
when the write is acknowledged. A vector backend (service.index.backend) replays the entries on open
through a `LogReader`, and the collection truncates them once the backend holds them durably itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


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


class Entry(NamedTuple):
    """One log entry, decoded: an addition (arrays set) or a deletion (arrays None)."""

    seq: int
    op: str  # "add" or "del"
    item: int
    modality: str | None
    leaves: np.ndarray | None  # (L, d) float32
    gram: np.ndarray | None  # (L, L) float64
    vector: np.ndarray | None  # (d,) float32


def append_add(conn: sqlite3.Connection, item: int, record: Record) -> None:
    conn.execute("INSERT INTO log (op, item, modality, leaves, gram, vector) VALUES ('add', ?, ?, ?, ?, ?)",
                 (item, record.modality, record.leaves.astype(np.float32).tobytes(),
                  record.gram.astype(np.float64).tobytes(), record.vector.astype(np.float32).tobytes()))


def append_delete(conn: sqlite3.Connection, item: int) -> None:
    conn.execute("INSERT INTO log (op, item) VALUES ('del', ?)", (item,))


def last_seq(conn: sqlite3.Connection) -> int:
    """The latest entry's seq, 0 for an empty log."""
    return conn.execute("SELECT max(seq) FROM log").fetchone()[0] or 0


def truncate(conn: sqlite3.Connection, upto: int, limit: int) -> int:
    """Delete at most `limit` entries with seq <= `upto` (freeing blob pages is slow: callers slice it);
    returns how many went."""
    return conn.execute("DELETE FROM log WHERE seq IN (SELECT seq FROM log WHERE seq <= ? LIMIT ?)",
                        (upto, limit)).rowcount


class LogReader:
    """What a vector backend reads of the SQLite side: log entries and the ids of the stored items. The
    caller holds the collection's lock (the connection is not shared between threads otherwise)."""

    def __init__(self, conn: sqlite3.Connection, dim: int, groups: Mapping[str, list[str]]):
        self._conn, self.dim = conn, dim
        self.groups = groups  # modality -> leaf keys: the collection's meta, updated as modalities arrive

    def entries(self, after: int, limit: int | None = None) -> list[Entry]:
        """Entries with seq > `after`, in order; at most `limit` of them."""
        rows = self._conn.execute("SELECT seq, op, item, modality, leaves, gram, vector FROM log WHERE seq > ? "
                                  "ORDER BY seq LIMIT ?", (after, -1 if limit is None else limit)).fetchall()
        return [self._decode(*row) for row in rows]

    def _decode(self, seq: int, op: str, item: int, modality: str | None, leaves: bytes | None, gram: bytes | None,
                vector: bytes | None) -> Entry:
        if op != "add":
            return Entry(seq, op, item, modality, None, None, None)
        n_leaves = len(self.groups[modality])
        return Entry(seq, op, item, modality, np.frombuffer(leaves, np.float32).reshape(n_leaves, self.dim),
                     np.frombuffer(gram, np.float64).reshape(n_leaves, n_leaves), np.frombuffer(vector, np.float32))

    def count(self) -> int:
        return self._conn.execute("SELECT count(*) FROM log").fetchone()[0]

    def last_seq(self) -> int:
        return last_seq(self._conn)

    def item_ids(self) -> np.ndarray:
        """Every stored item's id, sorted."""
        return np.array([r[0] for r in self._conn.execute("SELECT id FROM items ORDER BY id")], dtype=np.int64)
