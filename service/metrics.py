"""Prometheus metrics of one app, in the app's own registry (two apps in one process never collide).

Stages, one histogram with a `stage` label: `decode` (inputs -> items), `queue` (an item waiting for
its batch), `encode` (one model call), `bond` (everything a space does beyond its encoders: projectors
and mixing), `search` (recorded by the collection routers). Plus batch sizes and queue depth per
encoder, requests by route and status, errors by kind, and admission by cost (service.admission): what
the requests in flight hold and what was refused, by reason.
encoder, inputs by space and modality, requests by route and status, errors by kind, and the standard
process metrics (CPU seconds, resident memory, open files: `process_*`) and Python's (`python_*`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram("freebind_stage_seconds", "Time spent per pipeline stage", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=r)
        self.batch_size = Histogram("freebind_batch_size", "Items per model call", ["encoder"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("freebind_queue_depth", "Items waiting for a batch", ["encoder"], registry=r)
        self.in_flight = Gauge("freebind_items_in_flight", "Items admitted and not yet answered", registry=r)
        self.items = Counter("freebind_items", "Inputs embedded", ["space", "modality"], registry=r)
        self.requests = Counter("freebind_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("freebind_request_seconds", "HTTP request latency", ["method", "route"],
                                         buckets=STAGE_BUCKETS, registry=r)
        self.errors = Counter("freebind_errors", "Error responses by kind", ["type"], registry=r)
        self.admission_refused = Counter("freebind_admission_refused", "Requests refused by estimated cost: "
                                         "request_work / request_memory (413), busy_work / busy_memory (429)",
                                         ["reason"], registry=r)
        self.admitted_work = Gauge("freebind_admitted_work", "Estimated work units held by requests in flight",
                                   registry=r)
        self.admitted_memory = Gauge("freebind_admitted_memory_bytes", "Estimated decoded bytes held by requests "
                                     "in flight", registry=r)
        ProcessCollector(registry=r)  # what prometheus_client's default registry would have shown
        PlatformCollector(registry=r)

    def observe(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(stage, time.perf_counter() - start)

    def render(self) -> bytes:
        return generate_latest(self.registry)
