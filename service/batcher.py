"""Dynamic batching: items of many requests share one model call, made in the encoder's own thread.

Serving is a pipeline of stages that overlap: each item is *prepared* (an encoder's per-item CPU work:
resizing an image, audio features) by a shared pool of worker threads as soon as it is submitted, while
the model thread runs the batch before it; the model thread then collates prepared items, runs the
forward pass on the device and brings the vectors back to the host once per batch.

A request's items go into a bounded queue per modality, each with its own future. A worker task serves
the modalities in turn: it takes the next modality's oldest items as soon as a full batch of them is
waiting (`max_batch_size`, which may differ per modality) or the oldest has waited `max_wait_s`, and
runs the model on them in a dedicated thread (one thread per encoder: models are not called
concurrently, and the event loop stays free). Turns keep a slow modality from holding up a fast one:
with one first-come queue, a text behind a few dozen speech clips waited for all of them.

The queues hold only what callers admitted: the service's engine admits a whole request against
`max_queue` items in flight (service.engine) before any item is submitted, which bounds every
batcher's queues too. A batcher used without such a caller can bound its own (`max_queue` here): a
submission the queues cannot take whole is then refused with `Overloaded` (HTTP 429).

Queue and futures live on the event loop, so a request costs no lock and no thread switch of its own:
the only hand-offs are one per batch, to the model thread and back.

If a batch fails, each of its items is retried alone, so one bad item fails only its own request.
The worker counts model calls that fail for reasons other than bad input, per modality (an encoder's
image path can break while its text path works); after `FAILURE_LIMIT` in a row for any modality (and
whenever the worker has died) `healthy` is false, which is what /health/ready reports.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from bonds.encoders.base import Encoded
from bonds.errors import FreeBindError
from service.errors import NotReady, Overloaded
from service.metrics import Metrics

log = logging.getLogger(__name__)
FAILURE_LIMIT = 5


@dataclass
class _Job:
    modality: str
    item: Any
    enqueued: float
    future: asyncio.Future
    prepared: asyncio.Future | None = None  # the item's `prepare` in the worker pool, when there is one


class Batcher:
    def __init__(self, name: str, run: Callable[[str, Sequence[Any]], Encoded], *,
                 max_batch_size: int | Callable[[str], int], max_wait_s: float, max_queue: int | None = None,
                 prepare: Callable[[str, Any], Any] | None = None, prepare_pool: Executor | None = None,
                 retry_after_s: int = 1, metrics: Metrics | None = None):
        """`run(modality, prepared items)`: one model call (`Encoder.encode_prepared`); `prepare(modality, item)`:
        per-item work run in `prepare_pool` as items arrive (None: items go to `run` as they are).
        `max_batch_size`: items per model call, or a function of the modality that gives them. `max_queue`:
        items the queues take at most, for a batcher whose callers do not admit items themselves."""
        if prepare is not None and prepare_pool is None:
            raise ValueError("a batcher with a prepare step needs a pool to run it in")
        self.name, self._run_model = name, run
        self._prepare, self._prepare_pool = prepare, prepare_pool
        self.batch_limit = max_batch_size if callable(max_batch_size) else (lambda _modality: max_batch_size)
        self.max_wait_s, self.max_queue = max_wait_s, max_queue
        self.retry_after_s, self.metrics = retry_after_s, metrics
        self._queues: dict[str, deque[_Job]] = {}  # by modality, in the order modalities first came
        self._served_last: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix=f"model-{name}")
        self._stopping = False
        self.died: BaseException | None = None
        self.failures: dict[str, int] = {}  # modality -> model calls failed in a row
        if metrics is not None:
            metrics.queue_depth.labels(name).set_function(lambda: self.depth)

    # --- lifecycle (on the event loop) ------------------------------------------------------------
    def start(self) -> None:
        self._loop, self._wakeup = asyncio.get_running_loop(), asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then end the worker and the model thread."""
        self._stopping = True
        if self._task is not None:
            self._wakeup.set()
            await asyncio.wait([self._task], timeout=timeout)
        self._model_thread.shutdown(wait=False)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def consecutive_failures(self) -> int:
        return max(self.failures.values(), default=0)

    @property
    def healthy(self) -> bool:
        return self.alive and self.consecutive_failures < FAILURE_LIMIT

    def failing_modalities(self) -> list[str]:
        return [m for m, n in self.failures.items() if n >= FAILURE_LIMIT]

    @property
    def depth(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    # --- callers' side ----------------------------------------------------------------------------
    def submit(self, modality: str, items: Sequence[Any]) -> list[asyncio.Future]:
        """Queue every item or none (a request is never half admitted). Call on the event loop."""
        if self._stopping or not self.alive:
            raise NotReady(f"the batching worker of encoder {self.name!r} is not running")
        if self.max_queue is not None and self.depth + len(items) > self.max_queue:
            raise Overloaded(f"encoder {self.name!r} has {self.depth} items queued (limit {self.max_queue}); "
                             "retry later", retry_after_s=self.retry_after_s)
        now = time.perf_counter()
        jobs = [
            _Job(modality, item, now, self._loop.create_future(), self._prepare_soon(modality, item)) for item in items]
        self._queues.setdefault(modality, deque()).extend(jobs)
        self._wakeup.set()
        return [job.future for job in jobs]

    async def encode_async(self, modality: str, items: Sequence[Any]) -> Encoded:
        """What `Encoder.encode` returns, computed in batches shared with other requests."""
        return _assemble(await asyncio.gather(*self.submit(modality, items), return_exceptions=True))

    def _prepare_soon(self, modality: str, item: Any) -> asyncio.Future | None:
        """Start the item's prepare step in the pool now: it runs while the model computes earlier batches."""
        if self._prepare is None:
            return None
        return self._loop.run_in_executor(self._prepare_pool, self._timed_prepare, modality, item)

    def _timed_prepare(self, modality: str, item: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._prepare(modality, item)
        finally:
            if self.metrics is not None:
                self.metrics.observe("prepare", time.perf_counter() - started)

    # --- the worker -------------------------------------------------------------------------------
    async def _run(self) -> None:
        jobs: list[_Job] | None = []
        try:
            while (jobs := await self._next_batch()) is not None:
                await self._process(jobs)
        except BaseException as exc:  # noqa: BLE001 - even SystemExit from the model thread: record, answer, end
            self.died = exc
            log.critical("batching worker of %s died; /health now fails", self.name, exc_info=exc)
            left = [*(jobs or []), *(job for queue in self._queues.values() for job in queue)]
            self._queues = {}
            for job in left:
                if not job.future.done():
                    job.future.set_exception(NotReady(f"the batching worker of encoder {self.name!r} stopped"))

    async def _next_batch(self) -> list[_Job] | None:
        """Wait for the first item, then for a full batch of the next modality's or its oldest item's deadline."""
        while (modality := self._next_modality()) is None:
            if self._stopping:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        queue, limit = self._queues[modality], self.batch_limit(modality)
        deadline = queue[0].enqueued + self.max_wait_s
        while len(queue) < limit and not self._stopping:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        self._served_last = modality
        return [queue.popleft() for _ in range(min(limit, len(queue)))]

    def _next_modality(self) -> str | None:
        """The first modality with items waiting after the one served last (round robin), or None."""
        order = list(self._queues)
        start = order.index(self._served_last) + 1 if self._served_last in self._queues else 0
        return next((m for m in order[start:] + order[:start] if self._queues[m]), None)

    async def _process(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        live = []
        for job in jobs:  # a caller that went away costs no compute
            if not job.future.done():
                live.append(job)
            elif job.prepared is not None:
                job.prepared.cancel()
        if self.metrics is not None:
            for job in live:
                self.metrics.observe("queue", started - job.enqueued)
        ready = await self._prepared(live)
        if ready:  # a batch is of one modality
            await self._call(ready[0][0].modality, [job for job, _ in ready], [item for _, item in ready])

    async def _prepared(self, jobs: list[_Job]) -> list[tuple[_Job, Any]]:
        """`(job, prepared item)` of the jobs whose prepare step worked; the others fail alone, as a bad
        item fails in a model call (counted as an encoder failure unless it is the input's fault)."""
        if all(job.prepared is None for job in jobs):
            return [(job, job.item) for job in jobs]
        outcomes = await asyncio.gather(*(job.prepared for job in jobs), return_exceptions=True)
        ready = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self._fail(job, outcome)
            else:
                ready.append((job, outcome))
        return ready

    def _fail(self, job: _Job, exc: BaseException) -> None:
        if not isinstance(exc, FreeBindError):
            self.failures[job.modality] = self.failures.get(job.modality, 0) + 1
            log.error("encoder %s failed on one item", self.name, exc_info=exc)
        if not job.future.done():
            job.future.set_exception(exc)

    async def _call(self, modality: str, jobs: list[_Job], items: list[Any]) -> None:
        started = time.perf_counter()
        if self.metrics is not None:
            self.metrics.batch_size.labels(self.name).observe(len(jobs))  # every model call, retries too
        try:
            encoded = await self._loop.run_in_executor(self._model_thread, self._run_model, modality, items)
            # checked, or the zip below would end the worker
            if len(encoded.vectors) != len(jobs) or len(encoded.notes) != len(jobs):
                raise RuntimeError(f"encoder {self.name!r} answered {len(encoded.vectors)} vectors and "
                                   f"{len(encoded.notes)} notes for {len(jobs)} {modality} items")
        except Exception as exc:
            if len(jobs) > 1:  # isolate the culprit: the other requests' items still get answers
                for job, item in zip(jobs, items, strict=True):
                    await self._call(modality, [job], [item])
                return
            self._fail(jobs[0], exc)
            return
        self.failures[modality] = 0
        if self.metrics is not None:
            self.metrics.observe("encode", time.perf_counter() - started)
        for job, vector, note in zip(jobs, encoded.vectors, encoded.notes, strict=True):
            if not job.future.done():
                job.future.set_result((vector, note))


def _assemble(outcomes: list) -> Encoded:
    """Per-item `(vector, note)` results back into one `Encoded`; the first failure raised with the
    item's position in the caller's own list (its batch position means nothing to the caller)."""
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, FreeBindError):
            located = copy.copy(outcome)
            located.index = i
            raise located from None
        if isinstance(outcome, BaseException):
            raise outcome
    return Encoded(np.stack([v for v, _ in outcomes]).astype(np.float32, copy=False), [n for _, n in outcomes])
