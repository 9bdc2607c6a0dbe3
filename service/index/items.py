"""The SQLite side of a collection: the schema and the reads a search needs.

`items` maps string ids to int64 ids (never reused: AUTOINCREMENT) and holds modality and metadata;
`log` is the write-ahead log of components (service.index.collection); `meta` the collection's
settings. Filters become SQL over `json_extract(metadata, ...)` (service.index.filters).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.index.errors import InvalidFilterError
from service.index.filters import to_sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
                                  modality TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, item INTEGER NOT NULL,
                                modality TEXT, leaves BLOB, gram BLOB, vector BLOB);
"""


def connect(path: Path) -> sqlite3.Connection:
    """WAL journal + synchronous=FULL: a committed transaction is appended to the journal and fsynced."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # callers serialise access
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def ids_of(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, int]:
    """String id -> int id, for the keys that exist."""
    if not keys:
        return {}
    return dict(conn.execute(f"SELECT key, id FROM items WHERE key IN ({_marks(len(keys))})", list(keys)).fetchall())


def select(conn: sqlite3.Connection, filter_: Any, modalities: Sequence[str] | None) -> np.ndarray:
    """Sorted int ids of the items that pass the metadata filter and are of one of `modalities`."""
    where, params = to_sql(filter_)
    if modalities is not None:
        where += f" AND modality IN ({_marks(len(modalities))})"
        params += list(modalities)
    try:
        found = [r[0] for r in conn.execute(f"SELECT id FROM items WHERE {where} ORDER BY id", params)]
    except sqlite3.OperationalError as exc:  # e.g. a JSON path SQLite rejects; its own words
        raise InvalidFilterError(f"filter cannot be applied: {exc}") from None
    return np.array(found, dtype=np.int64)


def describe(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[str, str, dict[str, Any]]]:
    """int id -> (string id, modality, metadata), for the ids that still exist."""
    if not ids:
        return {}
    rows = conn.execute(f"SELECT id, key, modality, metadata FROM items WHERE id IN ({_marks(len(ids))})", list(ids))
    return {item: (key, modality, _metadata(text)) for item, key, modality, text in rows}


def _metadata(text: str) -> dict[str, Any]:
    """Stored metadata, parsed by orjson: every search answer parses its hits' (json's took ~8% of a query)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity, which json.dumps writes and orjson refuses
        return json.loads(text)
