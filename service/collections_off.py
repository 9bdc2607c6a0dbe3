"""The collection store of a server that keeps no collections (`FREEBIND_COLLECTIONS=false`).

Replicas of one deployment are separate processes: a store of each replica's own would hold an item
added through it and miss it through the others, and a restarted replica would start empty. The Ray
Serve replicas (deploy/ray/serve_app.py) therefore keep none and pass collection requests on to the one
process that does; anything else that reaches such a server's collection operations (/collections,
/search, /embed's enhance) gets a 501 that says why, rather than an answer from a store only it sees.
"""

from __future__ import annotations

from typing import Any

from service.errors import ServiceError

REASON = ("this server keeps no collections (FREEBIND_COLLECTIONS=false): collections live in one process, a plain "
          "`freebind serve` or the freebind-collections deployment of Ray Serve; send /collections and /search "
          "there (docs/deploy.md)")


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
