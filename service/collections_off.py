"""The collection store of a server that serves no collections (`FREEBIND_COLLECTIONS=false`).

Replicas of one deployment (Ray Serve) are separate processes, each with its own store: an item added
through one would be missing from the others, and a restarted replica would start empty. Such servers
refuse every collection operation (/collections, /search, /embed's enhance) with a 501 that says why
and where collections can live instead, rather than answer from a store only they can see.
"""

from __future__ import annotations

from typing import Any

from service.errors import ServiceError

REASON = ("this server keeps no collections (FREEBIND_COLLECTIONS=false, as on replicated Ray Serve deployments, "
          "where each replica would hold its own): serve them from one process, a plain `freebind serve` or a "
          "one-replica deployment, and send /collections and /search there (docs/deploy.md)")


class CollectionsOff(ServiceError):
    kind = "collections_off"


class NoCollections:
    """Stands in for `CollectionStore`: opening and closing do nothing, anything else says why not."""

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise CollectionsOff(REASON)
