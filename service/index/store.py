"""Every collection under one data folder: create, list, get, delete; open all at start, close at stop.

Layout: `<data_dir>/collections/<name>/` per collection (service.index.collection). Creation builds
the folder under a hidden temporary name and renames it into place; deletion renames it out of the way
before removing it. So after a crash a collection either exists whole or not at all.

A collection with index backend `milvus` keeps its components in Milvus (service.index.milvus): the
store checks that Milvus is reachable before creating one, and drops its Milvus collections with it.
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.index import milvus
from service.index.collection import Collection
from service.index.errors import CollectionExistsError, CollectionNotFoundError, InvalidCollectionError, storage_full
from service.index.index_settings import IndexSettings
from service.index.snapshot import fsync_dir

log = logging.getLogger(__name__)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # fullmatch: '$' would let a final newline in
FORMAT_VERSION = 1


class CollectionStore:
    def __init__(self, data_dir: str | Path, snapshot_every: int = 10_000, milvus_uri: str | None = None,
                 milvus_token: str = ""):
        self.root = Path(data_dir) / "collections"
        self.snapshot_every = snapshot_every
        self.milvus_uri, self.milvus_token = milvus_uri, milvus_token  # for collections that name no uri
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._owner = None  # the open lock file: one process per data folder (POSIX locks are per process)

    def open(self) -> None:
        """Load every collection: last snapshot + write-ahead log replay each."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._owner = open(self.root / ".lock", "w")  # noqa: SIM115 - held until close()
        try:
            fcntl.lockf(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._owner.close()
            raise RuntimeError(f"{self.root} is in use by another process (two servers on one data folder "
                               "would overwrite each other's snapshots)") from None
        for leftover in self.root.glob(".*"):  # half-created or half-deleted folders
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        started = time.monotonic()
        with self._lock:
            for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
                self._collections[folder.name] = self._open(folder)
        log.info("opened %d collections from %s in %.2fs", len(self._collections), self.root,
                 time.monotonic() - started)

    def _open(self, folder: Path) -> Collection:
        return Collection.open(folder, self.snapshot_every, milvus_uri=self.milvus_uri, milvus_token=self.milvus_token)

    def close(self) -> None:
        with self._lock:
            collections, self._collections = list(self._collections.values()), {}
        for collection in collections:
            collection.close()
        if self._owner is not None:
            self._owner.close()  # releases the lock
            self._owner = None

    def create(self, name: str, space: str, space_id: str, dim: int,
               index: IndexSettings | Mapping[str, Any] | None = None,
               mixing: Mapping[str, Any] | None = None) -> Collection:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidCollectionError(
                f"collection name {name!r}: 1 to 64 letters, digits, '_' or '-', starting with a letter or digit")
        settings = index if isinstance(index, IndexSettings) else IndexSettings.model_validate(dict(index or {}))
        meta = {"format_version": FORMAT_VERSION, "name": name, "space": space, "space_id": space_id, "dim": dim,
                "index": settings.model_dump(), "mixing": dict(mixing or {}), "groups": {}, "created": time.time()}
        uri = self._milvus_uri(settings) if settings.backend == "milvus" else None
        if uri:
            meta["milvus_uid"] = uuid.uuid4().hex[:16]  # names its Milvus collections: never those of an older one
            milvus.client(uri, self.milvus_token)  # reachable? (held until the collection holds its own)
        try:
            with self._lock:
                if name in self._collections:
                    raise CollectionExistsError(
                        f"collection {name!r} already exists; delete it first or pick another name")
                temp = self.root / f".{name}.creating-{uuid.uuid4().hex[:8]}"
                try:
                    temp.mkdir(parents=True)
                    Collection.create(temp, meta)
                    fsync_dir(temp)
                    temp.rename(self.root / name)
                except BaseException as exc:  # a full disk: no half-made folder left until the next restart
                    shutil.rmtree(temp, ignore_errors=True)
                    full = storage_full(exc)
                    if full is not None:
                        raise full from exc
                    raise
                fsync_dir(self.root)
                collection = self._collections[name] = self._open(self.root / name)
        finally:
            if uri:
                milvus.release(uri, self.milvus_token)
        return collection

    def _milvus_uri(self, settings: IndexSettings) -> str:
        uri = settings.milvus_uri or self.milvus_uri
        if not uri:
            raise InvalidCollectionError("index backend 'milvus' needs a Milvus: set FREEBIND_MILVUS_URI on the "
                                         "service "
                                         "(a milvus-lite file such as data/milvus.db, or http://host:19530) or "
                                         "index.milvus_uri on the collection")
        return uri

    def get(self, name: str) -> Collection:
        with self._lock:
            return self._get(name)

    def _get(self, name: str) -> Collection:
        collection = self._collections.get(name)
        if collection is None:  # other collections' names are not the caller's to learn here: GET /collections
            raise CollectionNotFoundError(f"unknown collection {name!r}")
        return collection

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                out.append(self.get(name).info())
            except CollectionNotFoundError:
                continue  # deleted meanwhile
        return out

    def drop(self, name: str) -> None:
        with self._lock:
            collection = self._get(name)
            collection.drop_backend()  # first: should Milvus refuse, the collection is still whole
            del self._collections[name]
            collection.discard()
            gone = self.root / f".{name}.deleting-{uuid.uuid4().hex[:8]}"
            (self.root / name).rename(gone)
            fsync_dir(self.root)
        shutil.rmtree(gone, ignore_errors=True)
