"""The engine: the served spaces, one batcher per encoder, and the async calls the routers make.

Spaces load in the background after start-up (so /health/live answers while weights load); each
distinct encoder object gets one `Batcher`; the spaces stay the library's own, unmodified objects.
One forward path: a request's space resolves the mixing and plans once; the engine awaits, in the
batchers, every encoder output the plan needs (riding in batches with other requests' items, no thread
held while it waits) and hands them to the library's `Space.evaluate` / `Space.evaluate_components`,
which only do the bond math. Items are prepared (resized, featurised) by one pool of worker threads
shared by every batcher, while the models compute.
Admission is by items in flight (`max_queue`), the one bound on the batchers' queues: a request is
admitted whole before any of its items is queued, and one that does not fit is a 429.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from bonds.description import load_space
from bonds.encoders.base import Audio, Encoded, Encoder
from bonds.errors import DescriptionError, DimensionError, FreeBindError, UnknownNameError
from bonds.mixing import ResolvedMixing
from bonds.plan import VECTOR, Node, encoder_leaves
from bonds.space import Components, Embedding, Space
from bonds.vectors import l2_normalize
from service.batcher import Batcher
from service.errors import InvalidInput, NotReady, Overloaded, TooManyItems
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    """The embeddings of one request's inputs, in input order."""

    space: Space
    vectors: np.ndarray  # (n, dim) float32
    modalities: list[str]
    notes: list[str | None]
    mixing: ResolvedMixing
    fingerprint: str


def unit_vector(vector: np.ndarray, what: str = "a vector input", index: int | None = None) -> np.ndarray:
    """A client's vector scaled to unit length, as float32 (bonds.vectors.l2_normalize); a zero vector has
    no direction to scale."""
    if not np.any(vector):
        raise InvalidInput(f"{what}: a zero vector has no direction", index=index)
    return l2_normalize(vector, eps=0.0)


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.spaces: dict[str, Space] = {}
        self.batchers: dict[int, Batcher] = {}  # by id() of the encoder object spaces share
        self.encoders: dict[int, Encoder] = {}  # the same keys: each batcher's encoder
        self.prepare_pool = ThreadPoolExecutor(preprocess_workers(settings), thread_name_prefix="prepare")
        self.state = "starting"  # -> loading -> warming -> ready | failed; stopped
        self.error: str | None = None
        self._in_flight = 0
        self._limiter: anyio.CapacityLimiter | None = None
        self._loaded = asyncio.Event()
        self._task: asyncio.Task | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._limiter = anyio.CapacityLimiter(self.settings.max_concurrency)
        self._task = asyncio.create_task(self._load())

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for batcher in self.batchers.values():
            await batcher.stop()
        self.prepare_pool.shutdown(wait=False, cancel_futures=True)
        self.state = "stopped"

    async def wait_ready(self, timeout: float | None = None) -> bool:
        await asyncio.wait_for(self._loaded.wait(), timeout)
        return self.state == "ready"

    async def _load(self) -> None:
        try:
            self.state = "loading"
            started = time.perf_counter()
            await anyio.to_thread.run_sync(self._load_spaces)
            for batcher in self.batchers.values():
                batcher.start()  # on the event loop, where their queues live
            log.info("loaded spaces %s in %.1fs", ", ".join(self.spaces), time.perf_counter() - started)
            self.state = "warming"
            if self.settings.warmup:
                await self.warm_up()
            self.state = "ready"
        except Exception as exc:
            # /health shows our own messages (a bad description, a missing checkpoint); anything else
            # only by type: the traceback is in the log
            self.state = "failed"
            self.error = str(exc) if isinstance(exc, FreeBindError) else f"{type(exc).__name__} (see the server log)"
            if isinstance(exc, FreeBindError):  # our own message says it all: a traceback would bury it
                log.error("the engine failed to start: %s; /health/live now fails", exc)
            else:
                log.exception("the engine failed to start; /health/live now fails")
        finally:
            self._loaded.set()

    def _load_spaces(self) -> None:
        cache: dict[str, Any] = {}  # one encoder object per (kind, options, device), however many spaces
        for entry in self.settings.spaces:
            space = load_space(entry, models_root=self.settings.models_root, device=self.settings.device,
                               dtype=self.settings.dtype, encoder_cache=cache)
            if space.name in self.spaces:
                raise DescriptionError(f"two served spaces are named {space.name!r} ({entry})")
            for encoder_space in space.encoder_spaces().values():
                self._add_batcher(encoder_space.encoder)
            self.spaces[space.name] = space
        default = self.settings.default_space
        if default is not None and default not in self.spaces:
            raise DescriptionError(f"default space {default!r} is not served; served: {', '.join(self.spaces)}")

    def _add_batcher(self, encoder: Encoder) -> None:
        if id(encoder) in self.batchers:
            return
        taken = any(b.name == encoder.name for b in self.batchers.values())
        label = f"{encoder.name}#{len(self.batchers)}" if taken else encoder.name
        # only encoders with per-item work of their own send items through the pool
        prepare = encoder.prepare if type(encoder).prepare is not Encoder.prepare else None
        self.batchers[id(encoder)] = Batcher(
            label, encoder.encode_prepared, prepare=prepare, prepare_pool=self.prepare_pool,
            max_batch_size=self.settings.max_batch_size or encoder.batch_size,
            max_wait_s=self.settings.max_wait_ms / 1000.0, metrics=self.metrics)  # queues bounded by _admit
        self.encoders[id(encoder)] = encoder

    async def warm_up(self) -> None:
        """One tiny input per space and modality: first calls (allocations, lazy init) are the slow ones."""
        for space in self.spaces.values():
            for modality in space.modalities:
                await self.embed(space, modality, [_SAMPLES[modality]()])

    async def probe(self) -> None:
        """Send one tiny input through each failing batcher: a success clears its failure count, so a
        transient failure does not leave the service unready with no traffic left to prove otherwise."""
        for batcher in self.batchers.values():
            if not batcher.alive:
                continue
            for modality in batcher.failing_modalities():  # the modality that fails, not one that works
                try:
                    await batcher.encode_async(modality, [_SAMPLES[modality]()])
                except Exception as exc:
                    log.warning("health probe of encoder %s (%s) failed: %s", batcher.name, modality, exc)

    # --- health -----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state == "ready" and all(b.healthy for b in self.batchers.values())

    @property
    def alive(self) -> bool:
        """False only for what a restart would fix: a failed start or a dead batching worker."""
        return self.state != "failed" and all(b.died is None for b in self.batchers.values())

    def health(self) -> dict[str, Any]:
        encoders = {b.name: {"alive": b.alive, "healthy": b.healthy, "queued": b.depth,
                             "consecutive_failures": b.consecutive_failures,
                             **{k: self.encoders[key].info()[k] for k in ("device", "precision")}}
                    for key, b in self.batchers.items()}
        return {"state": self.state, "error": self.error, "spaces": list(self.spaces), "encoders": encoders,
                "items_in_flight": self._in_flight}

    # --- what routers call ------------------------------------------------------------------------
    @property
    def default_space(self) -> str:
        return self.settings.default_space or next(iter(self.spaces), self.settings.spaces[0])

    def space(self, name: str | None = None) -> Space:
        """The served space called `name` (None: the default); `UnknownNameError` lists the valid ones."""
        if self.state in ("starting", "loading"):
            raise NotReady("models are still loading; see /health/ready")
        if self.state == "failed":  # a 503 a client retries, not a 404 for a space that exists
            raise NotReady(f"the service failed to start ({self.error}); see /health/live")
        name = name or self.default_space
        if name not in self.spaces:
            raise UnknownNameError(f"unknown space {name!r}; served spaces: {', '.join(self.spaces) or '(none)'}")
        return self.spaces[name]

    async def embed(self, space: str | Space, modality: str, items: Sequence[Any], mixing: Any = None) -> Embedding:
        """`Space.encode`, with every encoder call batched across requests."""
        target = space if isinstance(space, Space) else self.space(space)
        with self._admit(len(items)):
            return await self._embed(target, modality, items, target.resolve(mixing))

    async def components(self, space: str | Space, modality: str, items: Sequence[Any],
                         mixing: Any = None) -> Components:
        """`Space.components` (leaf vectors for re-mixing at search time, around the collection's `mixing`),
        batched the same way."""
        target = space if isinstance(space, Space) else self.space(space)
        target.check_modality(modality)
        plan = target.plan(modality, target.full_mixing(mixing))  # a bad mixing fails here, before anything is queued
        with self._admit(len(items)):
            outputs = await self._encoder_outputs(target, plan, items)
            components = await self._evaluate(target, target.evaluate_components, modality, plan, outputs)
        self.metrics.items.labels(space.name, modality).inc(len(items))
        return components

    async def embed_inputs(self, space: str | Space, inputs: Sequence[tuple[str, Any]], mixing: Any = None) -> Embedded:
        """Inputs of mixed modalities: one plan per modality (run together), answers in input order.

        The request is admitted whole: admitted one modality at a time, a request larger than the free
        permits had its first groups encoded and then a 429. An error of one item carries that item's
        position in `inputs`.
        """
        target = space if isinstance(space, Space) else self.space(space)
        resolved = target.resolve(mixing)
        positions: dict[str, list[int]] = {}
        for i, (modality, _) in enumerate(inputs):
            positions.setdefault(modality, []).append(i)
        with self._admit(sum(len(w) for m, w in positions.items() if m != VECTOR)):
            return await self._embed_groups(target, inputs, positions, resolved)

    async def _embed_groups(self, target: Space, inputs: Sequence[tuple[str, Any]], positions: dict[str, list[int]],
                            resolved: ResolvedMixing) -> Embedded:
        vectors = np.zeros((len(inputs), target.dim), dtype=np.float32)
        notes: list[str | None] = [None] * len(inputs)

        async def run(modality: str, where: list[int]) -> None:
            items = [inputs[i][1] for i in where]
            try:
                if modality == VECTOR:
                    vectors[where] = self._given_vectors(target, items)
                    return
                embedding = await self._embed(target, modality, items, resolved)
            except FreeBindError as exc:
                if exc.index is not None:
                    exc.index = where[exc.index]
                raise
            vectors[where] = embedding.vectors
            for i, note in zip(where, embedding.notes, strict=True):
                notes[i] = note

        results = await asyncio.gather(*(run(m, w) for m, w in positions.items()), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:  # report the earliest bad input, whichever group finished first
            raise min(errors, key=lambda e: (getattr(e, "index", None) is None, getattr(e, "index", 0) or 0))
        return Embedded(target, vectors, [m for m, _ in inputs], notes, resolved, target.fingerprint(resolved))

    @staticmethod
    def _given_vectors(space: Space, items: list[np.ndarray]) -> np.ndarray:
        for i, vector in enumerate(items):
            if vector.shape != (space.dim,):
                raise DimensionError(f"vector has {vector.size} numbers; space {space.name!r} is {space.dim}-d",
                                     index=i)
        return np.stack([unit_vector(vector, index=i) for i, vector in enumerate(items)])

    # --- the forward path ------------------------------------------------------------------------
    @contextmanager
    def _admit(self, n: int) -> Iterator[None]:
        """Permits by item: a request is admitted whole or refused with 429, never queued unboundedly."""
        if n > self.settings.max_queue:
            raise TooManyItems(f"{n} items in one call; at most {self.settings.max_queue} (FREEBIND_MAX_QUEUE)")
        if self._in_flight + n > self.settings.max_queue:
            raise Overloaded(f"{self._in_flight} items are in flight (limit {self.settings.max_queue}); retry later",
                             retry_after_s=self.settings.retry_after_s)
        self._in_flight += n
        self.metrics.in_flight.set(self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= n
            self.metrics.in_flight.set(self._in_flight)

    async def _embed(self, space: Space, modality: str, items: Sequence[Any], resolved: ResolvedMixing) -> Embedding:
        """Plan once, encode the plan's leaves in the batchers, evaluate: an admitted request's one path."""
        space.check_modality(modality)
        plan = space.plan(modality, resolved)
        outputs = await self._encoder_outputs(space, plan, items)
        embedding = await self._evaluate(space, space.evaluate, plan, outputs, resolved)
        self.metrics.items.labels(space.name, modality).inc(len(items))
        return embedding

    async def _encoder_outputs(self, space: Space, plan: Node, items: Sequence[Any]) -> dict[str, Encoded]:
        """Every encoder output `plan` needs, by leaf key, from the batchers. Two leaves of one encoder object
        and modality (spaces sharing an encoder) are one run."""
        if self.state not in ("ready", "warming"):
            raise NotReady(f"the engine is {self.state}; see /health/ready")
        encoders = space.encoder_spaces()
        runs: dict[tuple[int, str], list[str]] = {}
        for leaf in encoder_leaves(plan):
            runs.setdefault((id(encoders[leaf.space].encoder), leaf.modality), []).append(leaf.key)
        outputs = await asyncio.gather(*(self.batchers[key].encode_async(modality, items) for key, modality in runs))
        return {leaf_key: encoded for keys, encoded in zip(runs.values(), outputs, strict=True) for leaf_key in keys}

    async def _evaluate(self, space: Space, evaluate, *args) -> Any:
        """The library's bond math on the encoder outputs: projector MLPs are real CPU work, off the event loop."""
        started = time.perf_counter()
        if space.bonds():
            out = await anyio.to_thread.run_sync(evaluate, *args, limiter=self._limiter)
        else:  # a lone encoder's plan is its output as is
            out = evaluate(*args)
        self.metrics.observe("bond", time.perf_counter() - started)
        return out


def preprocess_workers(settings: Settings) -> int:
    """Threads that prepare items (resize, audio features) for every batcher: the setting, else one per
    core the process may use, at most 16 (image preparation stops scaling there on a 16-core host)."""
    if settings.preprocess_workers is not None:
        return settings.preprocess_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(16, cores))


def _sample_image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (127, 127, 127))


_SAMPLES: Mapping[str, Any] = {
    "text": lambda: "warm-up",
    "image": _sample_image,
    "audio": lambda: Audio(np.zeros(16_000, dtype=np.float32), 16_000),
}
