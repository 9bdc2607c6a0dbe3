"""One load generator for every HTTP benchmark: closed loop, bounded count, loopback only.

`concurrency` workers each send their next request as soon as the last one is answered, until
`requests` have been sent; request bodies are serialised before the clock starts so the client spends
as little of the shared CPU as it can. A warm-up round (one request per worker) is not counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from bench.common import latency_summary


async def _drive(url: str, bodies: Sequence[bytes], concurrency: int, requests: int, warmup: bool,
                 headers: dict[str, str]) -> tuple[list[float], dict[int | str, int], float]:
    # idle connections are dropped well before uvicorn's 5 s keep-alive: a request sent on a connection the
    # server is closing at that moment fails as "disconnected", which would be charged to the server
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False, keepalive_timeout=2.0)
    timeout = aiohttp.ClientTimeout(total=600)
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        async def one(i: int, record: bool) -> None:
            started = time.perf_counter()
            try:
                async with session.post(url, data=bodies[i % len(bodies)]) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientConnectionError as exc:  # counted and reported, not a crash of the whole part
                status = f"disconnected ({type(exc).__name__})"
            if record:
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

        if warmup:
            await asyncio.gather(*(one(i, False) for i in range(concurrency)))
        next_index = iter(range(requests))

        async def worker() -> None:
            for i in next_index:  # one shared iterator: each request index is taken once
                await one(i, True)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, statuses, wall


def run(url: str, bodies: Sequence[bytes], items_per_request: int, concurrency: int, requests: int,
        warmup: bool = True) -> dict[str, Any]:
    """items/s, requests/s and latency percentiles of `requests` POSTs of `bodies` (cycled) to `url`."""
    latencies, statuses, wall = asyncio.run(
        _drive(url, bodies, concurrency, requests, warmup, {"content-type": "application/json"}))
    ok = statuses.get(200, 0)
    return {"concurrency": concurrency, "requests": requests, "items_per_request": items_per_request,
            "seconds": round(wall, 3), "items_per_s": round(ok * items_per_request / wall, 1),
            "requests_per_s": round(ok / wall, 1), **latency_summary(latencies),
            "errors": {str(k): v for k, v in statuses.items() if k != 200}}
