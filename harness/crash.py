"""Crash trials: SIGKILL a real server at a random moment while clients ingest, restart it, check the store.

Per trial, `writers` threads add items (text, vector and image; new ids, replacements of their own
acknowledged items with a new version, deletions) to a fresh collection over HTTP. Each write is in
flight until its 200 arrives: then it is *acknowledged*. At a random moment the server gets SIGKILL.
After the restart:

- the store opens (the server gets ready) and every collection of earlier trials keeps its count;
- every acknowledged item is present with the metadata of its last acknowledged version, and a search
  for its own content, filtered to it, finds it with score 1 (its stored components are intact);
- every acknowledged deletion is absent;
- a write in flight at the kill is all or nothing: absent, or present with the metadata of one of the
  versions sent, and then searchable like the others (never present without its components);
- the collection's count equals the number of ids found present: nothing else was stored.
"""

from __future__ import annotations

import base64
import io
import random
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from harness.servers import Server
from harness.tiny_space import DIM


def content(item_id: str) -> dict[str, Any]:
    """The input of an item, a pure function of its id: text, vector or image."""
    rng = np.random.default_rng(zlib.crc32(item_id.encode()))
    kind = ("text", "text", "vector", "image")[int(rng.integers(4))]
    if kind == "text":
        return {"text": f"item {item_id} " + " ".join(f"w{int(x)}" for x in rng.integers(0, 5000, 6))}
    if kind == "vector":
        return {"vector": [round(float(x), 6) for x in rng.standard_normal(DIM)]}
    pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return {"image": base64.b64encode(buffer.getvalue()).decode()}


@dataclass
class Ledger:
    """What the clients know: per id, the versions that may be stored and whether one is certain."""

    certain: dict[str, dict | None] = field(default_factory=dict)  # id -> acknowledged metadata (None: deleted)
    possible: dict[str, list[dict | None]] = field(default_factory=dict)  # id -> states a crash may have left
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sending(self, item_id: str, state: dict | None) -> None:
        with self.lock:
            self.possible.setdefault(item_id, [self.certain.get(item_id, None)]).append(state)

    def acked(self, item_id: str, state: dict | None) -> None:
        with self.lock:
            self.certain[item_id] = state
            self.possible[item_id] = [state]


@dataclass
class TrialResult:
    trial: int
    kill_after_s: float
    acked_writes: int
    unacked_writes: int
    items_expected: int
    unacked_found: int
    restart_s: float
    verify_s: float


def _writer(base: str, collection: str, writer: int, ledger: Ledger, stop: threading.Event, rng: random.Random,
            counters: dict[str, Any]) -> None:
    try:
        _write(base, collection, writer, ledger, stop, rng, counters)
    except BaseException as exc:  # noqa: BLE001  (reported by the trial, not lost in a thread)
        counters["errors"].append(repr(exc))


def _write(base: str, collection: str, writer: int, ledger: Ledger, stop: threading.Event, rng: random.Random,
           counters: dict[str, Any]) -> None:
    mine: list[str] = []
    seq = 0
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set():
            op = rng.random()
            try:
                if op < 0.12 and mine:  # delete one of mine
                    item_id = mine.pop(rng.randrange(len(mine)))
                    ledger.sending(item_id, None)
                    r = http.delete(f"/collections/{collection}/items/{item_id}")
                    if r.status_code == 200:
                        ledger.acked(item_id, None)
                    else:
                        raise AssertionError(f"delete {item_id}: {r.status_code} {r.text}")
                else:
                    if op < 0.25 and mine:  # a new version of one of mine
                        batch = [(item_id, 2) for item_id in rng.sample(mine, min(len(mine), rng.randint(1, 3)))]
                    else:
                        batch = [(f"{collection}-w{writer}-{seq + k}", 1) for k in range(rng.randint(1, 6))]
                        seq += len(batch)
                    items = [{"id": item_id, **content(item_id),
                              "metadata": {"uid": item_id, "version": version, "writer": writer,
                                           "pad": "x" * rng.randint(0, 300)}}
                             for item_id, version in batch]
                    for item in items:
                        ledger.sending(item["id"], item["metadata"])
                    r = http.post(f"/collections/{collection}/items", json={"items": items})
                    if r.status_code != 200:
                        raise AssertionError(f"add: {r.status_code} {r.text}")
                    for item in items:
                        ledger.acked(item["id"], item["metadata"])
                        if item["id"] not in mine:
                            mine.append(item["id"])
                counters["acked"] += 1
            except (httpx.TransportError, httpx.TimeoutException):
                counters["unacked"] += 1
                return  # the server is gone


def verify(base: str, collection: str, ledger: Ledger) -> int:
    """Checks the invariants of the module docstring; returns how many unacknowledged writes were found
    applied (present in a state that only that write could have left)."""
    found_unacked = 0
    with httpx.Client(base_url=base, timeout=30) as http:
        info = http.get(f"/collections/{collection}")
        assert info.status_code == 200, info.text
        present = 0
        for item_id, states in sorted(ledger.possible.items()):
            r = http.get(f"/collections/{collection}/items/{item_id}")
            assert r.status_code in (200, 404), (item_id, r.status_code, r.text)
            stored = r.json()["metadata"] if r.status_code == 200 else None
            assert stored in states, f"{item_id}: stored {stored}, possible {states}"
            if len(states) > 1 and stored == states[-1] and stored != states[0]:
                found_unacked += 1
            if stored is None:
                continue
            present += 1
            query = content(item_id)
            hits = http.post("/search", json={"collection": collection, "query": query, "top_k": 1,
                                              "filter": {"uid": item_id}, "mode": "exact"})
            assert hits.status_code == 200, (item_id, hits.text)
            results = hits.json()["results"]
            assert [h["id"] for h in results] == [item_id], (item_id, results)
            assert results[0]["score"] > 0.999, (item_id, results[0]["score"])
            assert results[0]["metadata"] == stored
        assert info.json()["count"] == present, (info.json()["count"], present)
    return found_unacked


def run_trials(space_file: Path, data_dir: Path, trials: int, launcher: str = "fork", writers: int = 8,
               kill_after_acks: tuple[int, int] = (5, 60), seed: int = 0, log=print) -> list[TrialResult]:
    """`trials` kill -9 / restart cycles against one data folder; raises AssertionError on any violation.

    The kill comes once a random number of writes in `kill_after_acks` have been acknowledged, plus a
    random 0-250 ms: always during ingestion, however fast or loaded the machine is."""
    rng = random.Random(seed)
    results: list[TrialResult] = []
    counts: dict[str, int] = {}
    server = Server([str(space_file)], data_dir, launcher=launcher, log_path=data_dir.parent / "crash-server.log")
    server.start()
    try:
        for trial in range(trials):
            collection = f"crash-{trial}"
            r = httpx.post(f"{server.base}/collections", json={"name": collection}, timeout=30)
            assert r.status_code == 201, r.text
            ledger, stop, counters = Ledger(), threading.Event(), {"acked": 0, "unacked": 0, "errors": []}
            threads = [threading.Thread(target=_writer, args=(server.base, collection, w, ledger, stop,
                                                              random.Random(rng.random()), counters), daemon=True)
                       for w in range(writers)]
            for t in threads:
                t.start()
            started, acks, jitter = time.monotonic(), rng.randint(*kill_after_acks), rng.uniform(0, 0.25)
            while counters["acked"] < acks and not counters["errors"] and time.monotonic() - started < 120:
                time.sleep(0.005)
            time.sleep(jitter)
            kill_after = time.monotonic() - started
            server.kill()
            stop.set()
            for t in threads:
                t.join(60)
            assert not counters["errors"], counters["errors"]
            started = time.monotonic()
            server.start()
            restart_s = time.monotonic() - started
            started = time.monotonic()
            found = verify(server.base, collection, ledger)
            for name, count in counts.items():  # earlier trials' collections survived this crash too
                got = httpx.get(f"{server.base}/collections/{name}", timeout=30).json()["count"]
                assert got == count, (name, got, count)
            counts[collection] = httpx.get(f"{server.base}/collections/{collection}", timeout=30).json()["count"]
            result = TrialResult(trial, round(kill_after, 3), counters["acked"], counters["unacked"],
                                 sum(v is not None for v in ledger.certain.values()), found,
                                 round(restart_s, 2), round(time.monotonic() - started, 2))
            results.append(result)
            log(result)
        server.stop()  # a clean stop (snapshot on close) and one more start: counts unchanged
        server.start()
        for name, count in counts.items():
            assert httpx.get(f"{server.base}/collections/{name}", timeout=30).json()["count"] == count
    finally:
        server.stop()
    return results
