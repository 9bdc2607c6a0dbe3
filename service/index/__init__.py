"""Per-collection vector store: components for search-time mixing, FAISS candidates, SQLite metadata,
durable writes. `CollectionStore(data_dir)` is what the app holds; see collection.py for the design."""

from service.index.collection import Collection, Hit
from service.index.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    InvalidCollectionError,
    InvalidFilterError,
    ItemNotFoundError,
    SpaceMismatchError,
    StorageFullError,
    StoreError,
)
from service.index.index_settings import IndexSettings
from service.index.log import Record
from service.index.store import CollectionStore

__all__ = [
    "Collection",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CollectionStore",
    "Hit",
    "IndexSettings",
    "InvalidCollectionError",
    "InvalidFilterError",
    "ItemNotFoundError",
    "Record",
    "SpaceMismatchError",
    "StorageFullError",
    "StoreError",
]
