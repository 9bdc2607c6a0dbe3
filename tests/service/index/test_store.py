"""The collection store: persistence, crash recovery under SIGKILL, concurrency, ANN paths, errors.

Tests taking the `backend` fixture run twice: components in the service (FAISS) and in a real
milvus-lite engine; both must give the same results.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from service.index import (
    CollectionExistsError,
    CollectionNotFoundError,
    CollectionStore,
    InvalidCollectionError,
    InvalidFilterError,
    Record,
    SpaceMismatchError,
    StorageFullError,
)
from tests.service.index.synthetic import (
    BATCH,
    PLANS,
    SPACE_ID,
    deleted_in,
    open_store,
    record,
    records_for_batch,
    vector,
)

REPO = Path(__file__).resolve().parents[3]


def keys_of(hits):
    return [h.key for h in hits]


def brute_force(keys, query, k):
    scores = np.array([vector(key) @ query for key in keys])
    return [keys[i] for i in np.argsort(-scores, kind="stable")[:k]]


def test_write_close_reopen_keeps_everything(tmp_path, backend):
    store = open_store(tmp_path, milvus_uri=backend.uri)
    collection = store.get("crash")
    collection.upsert(SPACE_ID, [record(f"k{i}", n=i) for i in range(50)])
    collection.delete(["k3", "k4"])
    collection.upsert(SPACE_ID, [record("k5", n=500)])  # replace: new metadata, same key
    query = vector("query")
    before = keys_of(collection.search(PLANS, query, 10))
    store.close()

    again = backend.store(tmp_path)
    again.open()
    collection = again.get("crash")
    assert collection.info()["count"] == 48
    assert collection.get("k3") is None and collection.get("k5")["metadata"]["n"] == 500
    assert keys_of(collection.search(PLANS, query, 10)) == before
    assert keys_of(collection.search(PLANS, query, 10, mode="ann")) == before  # flat ANN index came back too
    again.close()


def crash(store: CollectionStore) -> None:
    """Let go of the files as a killed process would: no snapshot, no log truncation."""
    for collection in store._collections.values():
        collection.discard()
    store._owner.close()


def test_reopen_after_a_crash_replays_the_log_over_the_snapshot(tmp_path, backend):
    first = open_store(tmp_path, milvus_uri=backend.uri)
    collection = first.get("crash")
    for batch in range(5):
        collection.upsert(SPACE_ID, records_for_batch(batch))
        collection.delete(deleted_in(batch))
        if batch == 2:
            collection.snapshot()  # batches 0-2 in the snapshot, 3-4 only in the log
    crash(first)
    expected = {f"b{b}-{i}" for b in range(5) for i in range(BATCH)} - {k for b in range(5) for k in deleted_in(b)}
    second = open_store(tmp_path, milvus_uri=backend.uri)
    recovered = second.get("crash")
    assert recovered.info()["count"] == len(expected)
    query = vector("q")
    assert keys_of(recovered.search(PLANS, query, 8)) == brute_force(sorted(expected), query, 8)
    second.close()


def test_sigkill_mid_ingestion_loses_no_acknowledged_write(tmp_path, backend):
    """Kill -9 a writer three times at different points: acknowledged batches all there, none half-written."""
    open_store(tmp_path, milvus_uri=backend.uri).close()
    acked: set[int] = set()
    next_batch = 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for stop_after in (7, 31, 18):
        child = subprocess.Popen([sys.executable, "-m", "tests.service.index.ingest_child", str(tmp_path),
                                  str(next_batch),
                                  backend.uri or ""],
                                 stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
        seen = 0
        for line in child.stdout:
            acked.add(int(line.split()[1]))
            seen += 1
            if seen == stop_after:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # The child writes ahead of this reader: every ack it printed before dying counts, not just those read so far.
        acked.update(int(line.split()[1]) for line in child.stdout.read().splitlines())
        child.stdout.close()
        store = backend.store(tmp_path)
        store.open()
        collection = store.get("crash")
        last = max(acked)
        stored = {}
        for batch in range(last + 2):  # the batch after the last ack may or may not have committed
            for key in [r.key for r in records_for_batch(batch)]:
                item = collection.get(key)
                if item is not None:
                    stored[key] = item
        deleted = {k for b in range(last + 2) for k in deleted_in(b)}
        for batch in acked:
            for r in records_for_batch(batch):
                if r.key not in deleted:
                    assert r.key in stored, f"acknowledged item {r.key} lost"
        in_flight = [r.key for r in records_for_batch(last + 1) if r.key not in deleted]
        assert len([k for k in in_flight if k in stored]) in (0, len(in_flight)), "a batch was half-written"
        assert collection.info()["count"] == len(stored)
        for key in list(stored)[:20]:  # components intact: the item is its own best match
            assert collection.search(PLANS, vector(key), 1)[0].key == key
        store.close()
        next_batch = last + 2


def test_concurrent_adds_deletes_and_searches(tmp_path, backend):
    store = open_store(tmp_path, snapshot_every=40, milvus_uri=backend.uri)
    collection = store.get("crash")
    errors: list[BaseException] = []
    stop = threading.Event()

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
        return run

    def writer(prefix):
        for i in range(60):
            collection.upsert(SPACE_ID, [record(f"{prefix}{i}-{j}") for j in range(3)])
            if i % 4 == 0:
                collection.delete([f"{prefix}{i}-0"])

    def reader():
        while not stop.is_set():
            hits = collection.search(PLANS, vector("probe"), 5)
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)

    writers = [threading.Thread(target=guard(lambda p=p: writer(p))) for p in "abc"]
    readers = [threading.Thread(target=guard(reader)) for _ in range(3)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    expected = {f"{p}{i}-{j}" for p in "abc" for i in range(60) for j in range(3)} - {
        f"{p}{i}-0" for p in "abc" for i in range(0, 60, 4)}
    assert collection.info()["count"] == len(expected)
    store.close()
    again = open_store(tmp_path, milvus_uri=backend.uri)
    assert again.get("crash").info()["count"] == len(expected)
    again.close()


@pytest.mark.parametrize("index", [{"type": "flat"}, {"type": "hnsw"}, {"type": "ivf", "nlist": 8, "nprobe": 8}])
def test_ann_rerank_finds_the_exact_top_k(tmp_path, index, backend):
    store = backend.store(tmp_path, snapshot_every=150)
    store.open()
    collection = store.create("c", "synthetic", SPACE_ID, 8, backend.index(**index), {})
    keys = [f"k{i}" for i in range(400)]
    collection.upsert(SPACE_ID, [record(k, even=i % 2 == 0) for i, k in enumerate(keys)])
    collection.delete(keys[:100])  # HNSW: tombstones, dropped when the snapshot rebuilds the index
    collection.snapshot()
    collection.upsert(SPACE_ID, [record(f"x{i}") for i in range(60)])
    live = keys[100:] + [f"x{i}" for i in range(60)]
    query = vector("query")
    assert keys_of(collection.search(PLANS, query, 5, mode="ann")) == brute_force(live, query, 5)
    evens = [k for k in keys[100:] if int(k[1:]) % 2 == 0]
    filtered = collection.search(PLANS, query, 5, filter_={"even": True}, mode="ann")
    assert keys_of(filtered) == brute_force(evens, query, 5)
    store.close()
    again = backend.store(tmp_path)
    again.open()
    assert keys_of(again.get("c").search(PLANS, query, 5, mode="ann")) == brute_force(live, query, 5)
    again.close()


def test_filters_restrict_before_truncation(tmp_path, backend):
    store = open_store(tmp_path, milvus_uri=backend.uri)
    collection = store.get("crash")
    collection.upsert(SPACE_ID, [record(f"k{i}", year=2000 + i, tag="rare" if i in (7, 42) else "common")
                                 for i in range(60)])
    query = vector("query")
    for mode in ("exact", "ann"):
        rare = collection.search(PLANS, query, 5, filter_={"tag": "rare"}, mode=mode)
        assert sorted(keys_of(rare)) == ["k42", "k7"]  # both, although neither is in the unfiltered top 5
        ranged = collection.search(PLANS, query, 100, filter_={"year": {"gte": 2010, "lt": 2020}}, mode=mode)
        assert sorted(h.metadata["year"] for h in ranged) == list(range(2010, 2020))
        member = collection.search(PLANS, query, 100, filter_={"year": {"in": [2001, 2003, 1999]}}, mode=mode)
        assert sorted(keys_of(member)) == ["k1", "k3"]
    collection.upsert(SPACE_ID, [record("late", tag="rare")])  # a write refreshes cached filter results
    assert "late" in keys_of(collection.search(PLANS, query, 5, filter_={"tag": "rare"}))
    collection.delete(["k7"])
    assert "k7" not in keys_of(collection.search(PLANS, query, 5, filter_={"tag": "rare"}))
    with pytest.raises(InvalidFilterError, match="unknown operator"):
        collection.search(PLANS, query, 5, filter_={"year": {"between": [1, 2]}})
    with pytest.raises(InvalidFilterError, match="needs a number"):
        collection.search(PLANS, query, 5, filter_={"year": {"gte": "2000"}})
    with pytest.raises(InvalidFilterError, match="filter key"):
        collection.search(PLANS, query, 5, filter_={"bad'key": 1})
    store.close()


def test_errors_say_what_is_wrong(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from service.index import CollectionStore; "
                               "s = CollectionStore(sys.argv[1]); s.open(); print('open', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "open"
    with pytest.raises(RuntimeError, match="in use by another process"):
        CollectionStore(tmp_path).open()
    holder.kill()
    holder.wait()
    store = open_store(tmp_path)
    with pytest.raises(CollectionExistsError):
        store.create("crash", "synthetic", SPACE_ID, 8)
    with pytest.raises(InvalidCollectionError, match="collection name"):
        store.create("../escape", "synthetic", SPACE_ID, 8)
    with pytest.raises(CollectionNotFoundError, match="^unknown collection 'nope'$"):
        store.get("nope")  # and not the names of others: they are not the caller's to learn from a typo
    collection = store.get("crash")
    with pytest.raises(SpaceMismatchError, match="re-create"):
        collection.upsert("another-space-id", [record("a")])
    bad = record("a")
    bad.vector = np.ones(3, dtype=np.float32)
    with pytest.raises(InvalidCollectionError, match="do not fit"):
        collection.upsert(SPACE_ID, [bad])
    store.drop("crash")
    assert not (tmp_path / "collections" / "crash").exists()
    with pytest.raises(CollectionNotFoundError):
        collection.search(PLANS, vector("q"), 3)  # a handle held across the delete
    store.close()


def test_a_full_disk_rolls_a_write_back_whole_and_leaves_nothing_half_made(tmp_path, monkeypatch, caplog):
    """Issue 19, D9: on a full tmpfs writes answered 500, the log showed a second error from ROLLBACK (SQLite
    had rolled back already) and half-created `.name.creating-*` folders stayed until a restart. SQLite's
    max_page_count gives the same SQLITE_FULL as a full disk, deterministically."""
    store = open_store(tmp_path)
    collection = store.get("crash")
    collection.upsert(SPACE_ID, [record(f"kept{i}") for i in range(5)])
    pages = collection._conn.execute("PRAGMA page_count").fetchone()[0]
    collection._conn.execute(f"PRAGMA max_page_count = {pages}")
    big = [record(f"big{i}", blob="x" * 4000) for i in range(50)]
    with pytest.raises(StorageFullError, match="disk is full"):
        collection.upsert(SPACE_ID, big)
    assert "ROLLBACK" not in caplog.text
    assert collection.info()["count"] == 5 and collection.get("big0") is None and collection.get("kept4") is not None
    collection._conn.execute("PRAGMA max_page_count = 1073741823")
    assert collection.upsert(SPACE_ID, big) == 50  # room again: the same write goes through
    import service.index.store as store_module

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.Collection, "create", full_disk)
    with pytest.raises(StorageFullError):
        store.create("another", "synthetic", SPACE_ID, 8)
    assert sorted(p.name for p in (tmp_path / "collections").iterdir() if p.is_dir()) == ["crash"]
    store.close()


@pytest.mark.parametrize("fail_at", ["write_durably", "replace_atomically"])
def test_a_snapshot_cut_short_leaves_the_previous_state_whole(tmp_path, monkeypatch, fail_at):
    """Dying inside a snapshot (files half-written, or written but CURRENT not yet switched) loses nothing."""
    from service.index import snapshot

    store = open_store(tmp_path)
    collection = store.get("crash")
    collection.upsert(SPACE_ID, [record(f"a{i}") for i in range(20)])
    collection.snapshot()
    collection.upsert(SPACE_ID, [record(f"b{i}") for i in range(20)])
    collection.delete(["a0"])

    def die(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(snapshot, fail_at, die)
    with pytest.raises(OSError, match="power cut"):
        collection.snapshot()
    monkeypatch.undo()
    crash(store)
    again = open_store(tmp_path)
    recovered = again.get("crash")
    assert recovered.info()["count"] == 39 and recovered.get("a0") is None and recovered.get("b19") is not None
    assert not list((tmp_path / "collections" / "crash").glob("*.tmp"))  # leftovers cleaned on open
    again.close()


def test_non_finite_metadata_is_refused_and_rows_stored_so_before_are_repaired_at_open(tmp_path):
    store = open_store(tmp_path)
    collection = store.get("crash")
    with pytest.raises(InvalidCollectionError, match="finite"):
        collection.upsert(SPACE_ID, [record("odd", n=float("nan"))])
    collection.upsert(SPACE_ID, [record("plain", n=1), record("odd", n=2), record("big", n=3)])
    # what versions before 2026-12 stored: Python's json writes NaN and Infinity, SQLite calls them malformed,
    # and every filtered search of the collection failed
    for key, text in (("odd", '{"n": NaN, "m": [Infinity, 1]}'), ("big", '{"n": -Infinity}')):
        collection._conn.execute("UPDATE items SET metadata = ? WHERE key = ?", (text, key))
    store.close()
    again = open_store(tmp_path)
    repaired = again.get("crash")
    hits = {h.key: h.metadata for h in repaired.search(PLANS, vector("query"), 3, filter_={"n": {"ne": 5}})}
    assert hits == {"plain": {"key": "plain", "n": 1}, "odd": {"n": None, "m": [None, 1]}, "big": {"n": None}}
    assert sorted(h.key for h in repaired.search(PLANS, vector("query"), 3, filter_={"n": None})) == ["big", "odd"]
    again.close()


@pytest.mark.parametrize("index", [{"type": "flat"}, {"type": "hnsw"}, {"type": "ivf", "nlist": 8, "nprobe": 8}])
def test_search_at_the_default_mixing_scores_the_stored_vectors(tmp_path, index):
    """Told the plans are the collection's default mixing, a search ranks by the stored default vectors (the
    index's own scores), with filters, exclusions, deletions and the top_k cut applied as on the re-scored path."""
    store = open_store(tmp_path)
    collection = store.create("c", "synthetic", SPACE_ID, 8, {**index, "exact_below": 50}, {})
    keys = [f"k{i}" for i in range(300)]
    # Each item's default vector is deliberately another unit vector than its component: the two paths must differ.
    stored = {k: vector(f"default-{k}") for k in keys}
    collection.upsert(SPACE_ID, [Record(k, "text", {"odd": i % 2 == 1}, [PLANS["text"].key], vector(k)[None, :],
                                        np.ones((1, 1)), stored[k]) for i, k in enumerate(keys)])
    collection.delete(keys[:40])
    live = keys[40:]
    query = vector("query")

    def by_default_vectors(candidates, k):
        scores = np.array([stored[c] @ query for c in candidates])
        return [candidates[i] for i in np.argsort(-scores, kind="stable")[:k]]

    for mode in ("exact", "ann"):
        hits = collection.search(PLANS, query, 7, mode=mode, at_default_mixing=True)
        assert keys_of(hits) == by_default_vectors(live, 7)
        assert [h.score for h in hits] == pytest.approx([float(stored[h.key] @ query) for h in hits], abs=1e-5)
        assert all(h.modality == "text" and "odd" in h.metadata for h in hits)
        if mode == "exact":  # the components' scores (ANN candidates here come from unrelated default vectors)
            assert keys_of(collection.search(PLANS, query, 7, mode=mode)) == brute_force(live, query, 7)
        odd = [k for k in live if int(k[1:]) % 2 == 1]
        best_odd = by_default_vectors(odd, 1)[0]
        narrowed = collection.search(PLANS, query, 5, {"odd": True}, exclude_keys=[best_odd], mode=mode,
                                     at_default_mixing=True)
        assert keys_of(narrowed) == by_default_vectors([k for k in odd if k != best_odd], 5)
    store.close()
