"""Errors of the collection store, as library-style errors whose `kind` is one service.errors already
maps to an HTTP status (unknown_name 404, conflict 409, invalid_input 422, insufficient_storage 507,
not_ready 503)."""

from __future__ import annotations

import errno
import sqlite3

from bonds.errors import FreeBindError


class StoreError(FreeBindError):
    """Base of the store's errors a client can cause."""


class CollectionNotFoundError(StoreError, KeyError):
    kind = "unknown_name"

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return FreeBindError.__str__(self)


class ItemNotFoundError(CollectionNotFoundError):
    """An item id that the collection does not hold."""


class CollectionExistsError(StoreError):
    kind = "conflict"


class SpaceMismatchError(StoreError):
    """Vectors or components of another space (or another version of it) than the collection's."""

    kind = "conflict"


class InvalidCollectionError(StoreError, ValueError):
    """A bad collection name or settings, or items that cannot be stored."""

    kind = "invalid_input"


class InvalidFilterError(StoreError, ValueError):
    kind = "invalid_input"


class BackendUnavailableError(StoreError):
    """The Milvus server a collection lives in cannot be reached or refused a call: retry later."""

    kind = "not_ready"


class StorageFullError(StoreError):
    """The disk (or quota) is full: the write was rolled back whole; earlier writes are intact."""

    kind = "insufficient_storage"


def storage_full(exc: BaseException) -> StorageFullError | None:
    """`exc` as a StorageFullError when it says the disk is full (SQLITE_FULL, ENOSPC, EDQUOT), else None."""
    full = (isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))
    if not full:
        return None
    return StorageFullError("the server's disk is full: nothing of this request was stored (earlier writes are "
                            "intact); retry once the operator has made room")
