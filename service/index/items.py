"""The SQLite side of a collection: the schema and the reads a search needs.

`items` maps string ids to int64 ids (never reused: AUTOINCREMENT) and holds modality and metadata;
`log` is the write-ahead log of components (service.index.collection); `meta` the collection's
settings. Filters become SQL over `json_extract(metadata, ...)` (service.index.filters).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.index.errors import InvalidFilterError, storage_full
from service.index.filters import to_sql

log = logging.getLogger(__name__)

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


def locate(conn: sqlite3.Connection, keys: Sequence[str]) -> list[tuple[str, int, str]]:
    """`(string id, int id, modality)` of the keys that exist."""
    if not keys:
        return []
    return conn.execute(f"SELECT key, id, modality FROM items WHERE key IN ({_marks(len(keys))})",
                        list(keys)).fetchall()


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


def roll_back(conn: sqlite3.Connection, name: str, exc: BaseException) -> None:
    """Undo a failed write, then raise StorageFullError (507) if the disk was full, else return. A COMMIT
    or INSERT that fails for a full disk has rolled back already: a second ROLLBACK was a second error
    ("no transaction is active") on top of the first."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("collection %r: ROLLBACK after %r failed", name, exc)
    full = storage_full(exc)
    if full is not None:
        raise full from exc


def dump_metadata(metadata: dict[str, Any]) -> str:
    """Metadata as stored: strict JSON (NaN or Infinity would make every filter over the collection fail)."""
    return json.dumps(metadata, allow_nan=False)


def repair_metadata(conn: sqlite3.Connection, name: str) -> int:
    """Rewrite metadata SQLite cannot read with null for its non-finite numbers; returns how many rows.

    Before 2026-12 ingestion stored NaN and Infinity as Python's json writes them; SQLite's JSON functions
    call that malformed, so every filtered search of such a collection failed. One JSON check per item
    at open (~1 s per million small items), a write only where a row needs it."""
    bad = conn.execute("SELECT id, metadata FROM items WHERE json_valid(metadata) = 0").fetchall()
    if not bad:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for item, text in bad:
            conn.execute("UPDATE items SET metadata = ? WHERE id = ?", (dump_metadata(_finite(json.loads(text))), item))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    log.warning("collection %r: metadata of %d items held NaN or Infinity; stored null in their place", name, len(bad))
    return len(bad)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
