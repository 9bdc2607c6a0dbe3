"""Errors of the collection store, as library-style errors whose `kind` is one service.errors already
maps to an HTTP status (unknown_name 404, conflict 409, invalid_input 422, not_ready 503)."""

from __future__ import annotations

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
