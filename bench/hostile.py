"""Issue 19's hostile inputs against a real `freebind serve`, measured: what each costs the server.

    memory  12 PNGs of 6300 x 6300 in one 0.6 MB /embed body (D6): status, server RSS before, peak, after
    cancel  /classify with imagenet1k under a new factor, the client leaving after --give-up s (D7): text
            items the server embeds after the client left, and /embed latency meanwhile
    fetch   48 /embed requests whose image URL trickles a byte every 2 s for 30 s (D8): when they are
            answered, and the latency of an image /embed sent while they are in flight
    disk    writes into a 6 MB tmpfs until it is full (D9; needs root to mount): statuses, half-made
            folders, acknowledged items found after a restart

Loopback only; the tiny space unless --space names another (`cancel` wants a real text model, e.g.
starter_e5, to last long enough to matter). Prints one JSON object per part. Usage:
python bench/hostile.py [memory cancel fetch disk] [--space starter_e5] [--give-up 15]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import bad_media as media  # noqa: E402
from harness.servers import Server, trickling_upstream  # noqa: E402
from harness.tiny_space import write_space  # noqa: E402


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


class Sampler:
    """The server's RSS every 50 ms while in a `with` block: the peak."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def text_items(base: str) -> float:
    found = re.search(r'freebind_items_total\{modality="text"\} ([0-9.e+]+)', httpx.get(f"{base}/metrics").text)
    return float(found[1]) if found else 0.0


def memory(server: Server) -> dict:
    picture = base64.b64encode(media.huge_png(6300, 6300)).decode()
    body = {"inputs": [{"image": picture}] * 12}
    before = rss_mib(server.pid)
    with Sampler(server.pid) as sampler:
        started = time.perf_counter()
        r = httpx.post(f"{server.base}/embed", json=body, timeout=600)
        seconds = time.perf_counter() - started
    time.sleep(2)
    return {"status": r.status_code, "seconds": round(seconds, 2), "body_mb": round(len(json.dumps(body)) / 2**20, 2),
            "rss_before_mib": round(before), "rss_peak_mib": round(sampler.peak),
            "rss_after_mib": round(rss_mib(server.pid))}


def cancel(server: Server, give_up: float) -> dict:
    body = {"inputs": ["a photo of a dog"], "labelset": "imagenet1k", "mixing": {"factors": {}}}
    controls = httpx.get(f"{server.base}/spaces", timeout=60).json()
    bond = next((b for s in controls.get("spaces", []) for b in s.get("bonds", [])), None)
    if bond:  # a factor no request used before: the label set's centres are computed afresh
        body["mixing"] = {"factors": {bond["name"]: {"text": 0.4321}}}
    before = text_items(server.base)
    try:
        httpx.post(f"{server.base}/classify", json=body, timeout=give_up)
        answered = True
    except httpx.TimeoutException:
        answered = False
    left = text_items(server.base)
    latencies = []
    for _ in range(10):
        started = time.perf_counter()
        httpx.post(f"{server.base}/embed", json={"inputs": ["a dog barks"]}, timeout=600)
        latencies.append(time.perf_counter() - started)
        time.sleep(1)
    return {"answered_before_giving_up": answered, "embedded_before_leaving": left - before,
            "embedded_after_leaving": text_items(server.base) - left - len(latencies),
            "embed_latency_s_after_leaving": [round(x, 2) for x in latencies]}


def fetch(server: Server, n: int = 48) -> dict:
    stop = threading.Event()
    threading.Timer(30, stop.set).start()
    upstream, url = trickling_upstream(2.0, stop)
    picture = {"image": base64.b64encode(media.image("PNG", (64, 64))).decode()}
    started = time.perf_counter()
    answered: list[tuple[int, float]] = []

    def slow() -> None:
        r = httpx.post(f"{server.base}/embed", json={"inputs": [{"image": url}]}, timeout=600)
        answered.append((r.status_code, time.perf_counter() - started))

    with ThreadPoolExecutor(n) as pool:
        for _ in range(n):
            pool.submit(slow)
        time.sleep(3)  # every fetch is connected and trickling
        image_started = time.perf_counter()
        image = httpx.post(f"{server.base}/embed", json={"inputs": [picture]}, timeout=600)
        image_seconds = time.perf_counter() - image_started
    upstream.shutdown()
    times = sorted(t for _, t in answered)
    return {"url_requests": n, "statuses": sorted({s for s, _ in answered}), "answered_s_min": round(times[0], 1),
            "answered_s_max": round(times[-1], 1), "image_embed_while_fetching_s": round(image_seconds, 2),
            "image_status": image.status_code}


def disk(space: str, folder: Path) -> dict:
    mount = folder / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    statuses: dict[int, int] = {}
    acked: set[str] = set()
    try:
        with Server([space], mount / "data", launcher="fork", log_path=folder / "disk.log") as server:
            with httpx.Client(base_url=server.base, timeout=60) as http:
                for n in range(400):
                    r = http.post("/collections", json={"name": f"c{n % 4}"}) if n < 4 else http.post(
                        f"/collections/c{n % 4}/items", json={"items": [
                            {"id": f"i{n}-{k}", "text": f"item {n} {k}",
                             "metadata": {"blob": "x" * 8000}} for k in range(8)]})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        acked |= {f"c{n % 4}/i{n}-{k}" for k in range(8)}
                half_made = [
                    p.name for p in (mount / "data" / "collections").iterdir() if p.name.startswith(".") and p.is_dir()]
        log = (folder / "disk.log").read_text(errors="replace")
        with Server([space], mount / "data", launcher="fork", log_path=folder / "disk2.log") as server:
            urls = [f"{server.base}/collections/{key.split('/')[0]}/items/{key.split('/')[1]}" for key in sorted(acked)]
            found = sum(httpx.get(url).status_code == 200 for url in urls)
        return {"statuses": statuses, "half_made_folders": half_made, "acked_items": len(acked),
                "found_after_restart": found,
                "rollback_errors_logged": log.count("ROLLBACK") + log.count("no transaction is active")}
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["memory", "cancel", "fetch", "disk"])
    parser.add_argument("--space", help="space name or file (default: the tests' tiny space)")
    parser.add_argument("--give-up", type=float, default=15.0, help="seconds the /classify client waits")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hostile-"))
    space = args.space or str(write_space(folder / "space"))
    print(json.dumps({"load_average": os.getloadavg()}))
    for part in args.parts:
        if part == "disk":
            print(json.dumps({"part": part, **disk(space, folder)}), flush=True)
            continue
        settings = {"allow_urls": True, "allow_private_urls": True} if part == "fetch" else {}
        with Server([space], folder / f"data-{part}", launcher="fork", log_path=folder / f"{part}.log",
                    **settings) as server:
            figures = {"memory": lambda: memory(server), "cancel": lambda: cancel(server, args.give_up),
                       "fetch": lambda: fetch(server)}[part]()
        print(json.dumps({"part": part, **figures}), flush=True)


if __name__ == "__main__":
    main()
