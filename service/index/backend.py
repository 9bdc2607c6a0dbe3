"""Where a collection's components live and how they are searched: the `VectorBackend` protocol.

The collection (service.index.collection) keeps the items, their metadata and the write-ahead log of
components in SQLite: the source of truth. A backend holds the components the log describes, rebuilt
from it on open, and is told of each write once it is committed. Two implement the protocol:

- `FaissBackend` (service.index.faiss_backend): the components in the service's memory, FAISS
  candidates, and snapshots on disk that let the log be truncated;
- `MilvusBackend` (service.index.milvus_backend): the components in Milvus, pushed from the log, and
  a Milvus flush as the snapshot.

The collection picks one by its settings' `backend` (service.index.collection.open_backend); this module
knows neither, so the implementations depend on the protocol and not the other way round.

Every method is called under the collection's lock. Those that read (`components`, `vectors`,
`searcher`) take what they need under it and return the rest of the work as a function the collection
calls after letting go of the lock, so a slow scan or a network call never holds up a writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bonds.plan import Node
from service.index.log import LogReader, Record
from service.index.search import Scored


@dataclass(frozen=True)
class Search:
    """One search as the collection hands it to its backend."""

    plans: Mapping[str, Node]  # per item modality
    query_d: np.ndarray
    top_k: int
    groups: Mapping[str, list[str]]  # modality -> leaf keys, of the searched modalities that hold items
    allowed: np.ndarray | None  # item ids a filter allows (None: all)
    exclude: set[int]  # item ids left out of the results
    exact: bool  # score every allowed item (else ANN candidates, re-scored exactly)
    at_default_mixing: bool  # `plans` are the collection's default mixing, whose vectors are stored
    candidates: int  # ANN candidates wanted when not exact


class VectorBackend(Protocol):
    def recover(self, log: LogReader, counts: Mapping[str, int]) -> tuple[int, int]:
        """Bring the backend to the log's state on open and check it against SQLite (`counts`: items per
        modality there); returns the last log entry it reflects and how many entries a snapshot would take."""

    def apply(self, added: list[tuple[int, Record]], removed: np.ndarray) -> None:
        """A committed write: items removed (replaced or deleted) by id, then items added as `(id, record)`."""

    def components(self, item: int, modality: str, keys: list[str]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """One stored item's leaves `(1, L, d)` and Gram matrix `(1, L, L)`."""

    def vectors(self, plans: Mapping[str, Node],
                located: Mapping[str, np.ndarray]) -> Callable[[], list[tuple[np.ndarray, np.ndarray]]]:
        """Stored items' vectors under `plans` (`located`: modality -> item ids), rebuilt from their
        components, as `(ids, vectors (n, d))` per modality."""

    def searcher(self, search: Search) -> Callable[[], list[Scored]]:
        """The top_k items for `search`, best first."""

    def snapshot_due(self, pending: int, live: int) -> bool:
        """Whether `pending` log entries (with `live` items stored) are worth a snapshot now."""

    def snapshot(self, seq: int) -> Callable[[], int]:
        """Capture the state as of log entry `seq`; the function returned persists it (outside the lock) and
        returns the last log entry the backend now holds durably: the log may be truncated up to it."""

    def close(self) -> None:
        """Let go of what the backend holds open (connections); the collection is closing."""

    def drop(self) -> None:
        """Remove what lives outside the collection's folder; the collection is being deleted."""
