"""The Milvus side of a collection whose index backend is `milvus`: components as vector fields.

Layout: one Milvus collection per (FreeBind collection, item modality), named `fb_<uid>_<modality>`,
`uid` drawn when the FreeBind collection is created (so a re-created name never meets old rows, and
several services can share one Milvus). Per modality because a Milvus schema is fixed and the items
of each modality have their own number of leaves. Fields: `id` (the SQLite item id, primary key),
`vector` (the item under the collection's default mixing: what the FAISS index holds), `leaf_0` ..
`leaf_{L-1}` (the components), `gram` (the leaves' Gram matrix, float64, row-major); every vector
field has an index of the collection's type under the inner-product metric.

What stays in the service: SQLite (items, metadata, the write-ahead log) and the exact re-score. A
search asks Milvus for candidates on `vector` and on every leaf field (so a mixing far from the
default still finds its items), fetches the candidates' leaves and Gram matrices and scores them
exactly, as the FAISS path does. Filters stay SQL over SQLite; Milvus only sees the matching ids, as
`id in [...]` (so a filter means exactly what it means for FAISS).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from service.index.errors import BackendUnavailableError, InvalidCollectionError
from service.index.groups import GroupView
from service.index.index_settings import IndexSettings

MAX_TOPK = 16_384  # Milvus's limit on one search's limit and one query's page
IDS_PER_CALL = 4_096  # ids per `id in [...]` expression (its text is parsed by the server)
_clients: dict[tuple[str, str], list] = {}  # (uri, token) -> [MilvusClient, users]
_clients_lock = threading.Lock()


def client(uri: str, token: str = ""):
    """A MilvusClient per (uri, token), shared by the collections of this process; `release` when done."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise InvalidCollectionError("index backend 'milvus' needs pymilvus (and milvus-lite for a local file): "
                                     "pip install 'freebind[milvus]'") from None
    with _clients_lock:
        if (uri, token) not in _clients:
            try:
                _clients[(uri, token)] = [MilvusClient(uri=uri, token=token), 0]
            except Exception as exc:  # pymilvus raises its own and gRPC's errors
                raise BackendUnavailableError(f"cannot reach Milvus at {uri!r}: {exc}") from None
        _clients[(uri, token)][1] += 1
        return _clients[(uri, token)][0]


def release(uri: str, token: str = "") -> None:
    """One user fewer; the last one closes the client, and stops a milvus-lite engine so that another
    process (the service restarted) can open its file."""
    with _clients_lock:
        entry = _clients.get((uri, token))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _clients[(uri, token)]
    entry[0].close()
    if uri.endswith(".db"):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def _index(settings: IndexSettings) -> tuple[str, dict, dict]:
    """(index type, build params, search params) matching the FAISS settings of the same name."""
    if settings.type == "hnsw":
        return "HNSW", {"M": settings.m, "efConstruction": settings.ef_construction}, {"ef": settings.ef_search}
    if settings.type == "ivf":
        return "IVF_FLAT", {"nlist": settings.nlist}, {"nprobe": settings.nprobe}
    return "FLAT", {}, {}


class MilvusVectors:
    """The Milvus collections of one FreeBind collection; callers hold the collection's lock for writes."""

    def __init__(self, settings: IndexSettings, dim: int, uid: str, uri: str, token: str = ""):
        self.settings, self.dim, self.uid, self.uri, self._token = settings, dim, uid, uri, token
        self._client = client(uri, token)
        self._leaves: dict[str, int] = {}  # modality -> number of leaf fields, for the collections that exist

    def name(self, modality: str) -> str:
        return f"fb_{self.uid}_{modality}"

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InvalidCollectionError, BackendUnavailableError):
            raise
        except Exception as exc:
            raise BackendUnavailableError(f"Milvus at {self.uri!r} failed to {what}: {exc}") from None

    # --- schema -----------------------------------------------------------------------------------
    def ensure(self, modality: str, n_leaves: int) -> None:
        """The modality's Milvus collection, created (indexed, loaded) on first use."""
        if self._leaves.get(modality) == n_leaves:
            return
        from pymilvus import DataType

        c, name = self._client, self.name(modality)
        if not self._call("list collections", c.has_collection, name):
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("gram", DataType.ARRAY, element_type=DataType.DOUBLE, max_capacity=max(n_leaves**2, 1))
            index_type, build, _ = _index(self.settings)
            params = c.prepare_index_params()
            for field in ["vector", *(f"leaf_{j}" for j in range(n_leaves))]:
                schema.add_field(field, DataType.FLOAT_VECTOR, dim=self.dim)
                params.add_index(field, index_type=index_type, metric_type="IP", params=build)
            self._call("create a collection", c.create_collection, name, schema=schema)
            # sync=False: the index is declared now and built by the server; waiting polls every 0.5 s per field.
            self._call("create an index", c.create_index, name, params, sync=False)
        self._call("load a collection", c.load_collection, name)
        fields = [f["name"] for f in self._call("describe a collection", c.describe_collection, name)["fields"]]
        found = sum(f.startswith("leaf_") for f in fields)
        if found != n_leaves:
            raise InvalidCollectionError(f"Milvus collection {name!r} has {found} leaf fields, "
                                         f"but {modality} items have {n_leaves}")
        self._leaves[modality] = n_leaves

    def close(self) -> None:
        release(self.uri, self._token)

    def drop(self) -> None:
        for name in self._call("list collections", self._client.list_collections):
            if name.startswith(f"fb_{self.uid}_"):
                self._call("drop a collection", self._client.drop_collection, name)
        self._leaves.clear()

    # --- writes -----------------------------------------------------------------------------------
    def upsert(self, modality: str, ids: np.ndarray, leaves: np.ndarray, gram: np.ndarray, vectors: np.ndarray) -> None:
        """Rows `ids` (n,) with leaves (n, L, d), Gram (n, L, L), vectors (n, d); replaces rows of those ids."""
        self.ensure(modality, leaves.shape[1])
        rows = [{"id": int(i), "vector": vectors[n], "gram": gram[n].ravel().tolist(),
                 **{f"leaf_{j}": leaves[n, j] for j in range(leaves.shape[1])}} for n, i in enumerate(ids.tolist())]
        for start in range(0, len(rows), 1000):  # bounded gRPC messages
            self._call("upsert", self._client.upsert, self.name(modality), rows[start: start + 1000])

    def delete(self, modality: str, ids: np.ndarray) -> None:
        if modality in self._leaves and len(ids):
            for start in range(0, len(ids), IDS_PER_CALL):
                self._call("delete", self._client.delete, self.name(modality),
                           ids=ids[start: start + IDS_PER_CALL].tolist())

    def flush(self) -> None:
        """Make every write so far durable on the Milvus side (the write-ahead log may then let go of it)."""
        for modality in self._leaves:
            self._call("flush", self._client.flush, self.name(modality))

    # --- reads ------------------------------------------------------------------------------------
    def count(self, modality: str) -> int:
        if modality not in self._leaves:
            return 0
        rows = self._call("count", self._client.query, self.name(modality), filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def candidates(self, modality: str, query_d: np.ndarray, k: int, allowed: np.ndarray | None) -> np.ndarray:
        """Ids of the best k items on the default-mixing vector and on each leaf (their union, unsorted)."""
        if modality not in self._leaves or k <= 0:
            return np.zeros(0, dtype=np.int64)
        _, _, search_params = _index(self.settings)
        k = min(k, MAX_TOPK)
        fields = ["vector", *(f"leaf_{j}" for j in range(self._leaves[modality]))]
        found: list[int] = []
        filters = [""] if allowed is None else [_ids_in(allowed[s: s + IDS_PER_CALL])
                                                for s in range(0, len(allowed), IDS_PER_CALL)]
        for expression in filters:
            for field in fields:
                hits = self._call("search", self._client.search, self.name(modality), data=[query_d], anns_field=field,
                                  limit=k, filter=expression, output_fields=["id"],
                                  search_params={"metric_type": "IP", "params": search_params})
                found += [hit["id"] for hit in hits[0]]
        return np.unique(np.array(found, dtype=np.int64))

    def fetch(self, modality: str, keys: list[str], ids: np.ndarray) -> GroupView:
        """The components of `ids` (those Milvus holds) as a view that search.score_rows can read."""
        rows: list[dict] = []
        for start in range(0, len(ids), IDS_PER_CALL):
            rows += self._call("query", self._client.query, self.name(modality),
                               filter=_ids_in(ids[start: start + IDS_PER_CALL]), output_fields=self._fields(modality))
        return self._view(modality, keys, rows)

    def scan(self, modality: str, keys: list[str], block: int = 4096) -> Iterator[GroupView]:
        """Every row of the modality, `block` at a time (an exact search over the whole collection)."""
        if modality not in self._leaves:
            return
        pages = self._call("scan", self._client.query_iterator, self.name(modality), batch_size=block,
                           filter="", output_fields=self._fields(modality))
        try:
            while rows := self._call("scan", pages.next):
                yield self._view(modality, keys, rows)
        finally:
            pages.close()

    def _fields(self, modality: str) -> list[str]:
        return ["id", "gram", *(f"leaf_{j}" for j in range(self._leaves[modality]))]

    def _view(self, modality: str, keys: list[str], rows: list[dict]) -> GroupView:
        n, n_leaves = len(rows), len(keys)
        ids = np.array([r["id"] for r in rows], dtype=np.int64)
        leaves = np.empty((n, n_leaves, self.dim), dtype=np.float32)
        for j in range(n_leaves):
            leaves[:, j] = np.array([r[f"leaf_{j}"] for r in rows], dtype=np.float32).reshape(n, self.dim)
        gram = np.array([r["gram"] for r in rows], dtype=np.float64).reshape(n, n_leaves, n_leaves)
        return GroupView(modality, keys, ids, leaves, gram, np.zeros((n, self.dim), np.float32), np.ones(n, dtype=bool))


def _ids_in(ids: np.ndarray) -> str:
    return f"id in [{','.join(str(int(i)) for i in ids)}]"
