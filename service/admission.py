"""Admission by cost: what a request will take in compute and memory, estimated before anything is decoded.

Counting items admitted a short text and a 40 MP image alike. Now each input is priced from what its
header declares (text length, pixels, audio samples; a /classify label set by its descriptions):

- `work`, in units of one short text's encode: a text 1 per started 2 000 characters (about the 512
  tokens a text encoder reads), an image 1 plus 1 per 4 MP (decoding and resizing grow with pixels; the
  encoder sees 224 x 224), an audio clip 1 plus 1 per 10 s (encoders run one window per 10 to 30 s);
- `memory`, bytes held decoded until the request is answered: 3 per pixel (RGB), 4 per sample and
  channel read plus 4 per sample of the mono mix, 4 per character of text.

A request over `max_request_work` or `max_request_memory_mb` on its own is refused with 413 (it could
never run); one that does not fit beside the requests in flight (`max_work_in_flight`,
`max_memory_in_flight_mb`) with 429 and Retry-After. Either way before any pixel or sample is decoded,
and counted in /metrics as `freebind_admission_refused_total{reason}`. Each request holds a `Ticket`
(service.deps.TicketDep) that gives its reservations back when the request ends, however it ends.

The engine's own limit on items in flight (`max_queue`) stays: it is what bounds the batchers' queues.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bonds.media import audio_shape, image_size
from service.errors import Overloaded, ServiceError
from service.fetch import Fetcher
from service.metrics import Metrics
from service.settings import Settings

MB = 2**20
TEXT_CHARS_PER_UNIT = 2_000
IMAGE_PIXELS_PER_UNIT = 4_000_000
AUDIO_SECONDS_PER_UNIT = 10


class TooCostly(ServiceError):
    """A request whose estimated cost is over a per-request limit: it could never be admitted."""

    kind = "too_costly"


@dataclass(frozen=True)
class Cost:
    work: int = 0  # units of one short text's encode
    memory: int = 0  # bytes held decoded

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.work + other.work, self.memory + other.memory)


# --- estimates: pure functions of what an input declares ------------------------------------------------
def text_cost(chars: int) -> Cost:
    return Cost(1 + chars // TEXT_CHARS_PER_UNIT, 4 * chars)


def image_cost(width: int, height: int) -> Cost:
    pixels = width * height
    return Cost(1 + pixels // IMAGE_PIXELS_PER_UNIT, 3 * pixels)


def audio_cost(frames: int, channels: int, rate: int) -> Cost:
    return Cost(1 + int(frames / rate // AUDIO_SECONDS_PER_UNIT), 4 * frames * (channels + 1))


def labels_cost(descriptions: Sequence[str]) -> Cost:
    """A label set's centres: each description is embedded as a text."""
    return sum((text_cost(len(text)) for text in descriptions), Cost())


def input_cost(modality: str, payload: Any, settings: Settings) -> Cost:
    """The cost of one input as staged (text, media bytes or a vector), from headers only. Media whose
    header cannot be read cost one unit: decoding them fails at once. Audio is priced at no more than
    the duration limit, so a header declaring more is refused by that limit, with its own message."""
    if modality == "text":
        return text_cost(len(payload))
    if modality == "image":
        size = image_size(payload)
        return image_cost(*size) if size else Cost(1, len(payload))
    if modality == "audio":
        shape = audio_shape(payload)
        if not shape or shape[2] <= 0:
            return Cost(1, len(payload))
        frames, channels, rate = shape
        return audio_cost(min(frames, int(settings.max_audio_seconds * rate) + 1), channels, rate)
    return Cost(0, np.asarray(payload).nbytes)  # a vector: passed through, not encoded


# --- the server's budgets -------------------------------------------------------------------------------
class Admission:
    """What the requests in flight hold of the server's budgets; thread-safe (inputs are staged in threads)."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.held = Cost()
        self.fetcher = Fetcher(settings)
        self._lock = threading.Lock()
        metrics.admitted_work.set_function(lambda: self.held.work)
        metrics.admitted_memory.set_function(lambda: self.held.memory)

    def ticket(self) -> Ticket:
        return Ticket(self)

    def take(self, cost: Cost, already: Cost) -> None:
        """Reserve `cost` for a request that holds `already`, or refuse it (TooCostly, Overloaded)."""
        s, mine = self.settings, already + cost
        if mine.work > s.max_request_work:
            self._refuse("request_work", TooCostly(
                f"this request's inputs are estimated at {mine.work} units of work; one request may take "
                f"{s.max_request_work} (FREEBIND_MAX_REQUEST_WORK): send fewer or smaller inputs per request"))
        if mine.memory > s.max_request_memory_mb * MB:
            self._refuse("request_memory", TooCostly(
                f"this request's inputs would take {_mb(mine.memory)} MB decoded; one request may take "
                f"{s.max_request_memory_mb} MB (FREEBIND_MAX_REQUEST_MEMORY_MB): send fewer or smaller images or "
                "audio per request"))
        with self._lock:
            held = self.held + cost
            if held.work > s.max_work_in_flight or held.memory > s.max_memory_in_flight_mb * MB:
                reason = "busy_work" if held.work > s.max_work_in_flight else "busy_memory"
                self._refuse(reason, Overloaded(
                    f"the requests in flight hold {self.held.work} of {s.max_work_in_flight} work units and "
                    f"{_mb(self.held.memory)} of {s.max_memory_in_flight_mb} MB; this one needs {cost.work} and "
                    f"{_mb(cost.memory)} MB: retry later", retry_after_s=s.retry_after_s))
            self.held = held

    def give_back(self, cost: Cost) -> None:
        with self._lock:
            self.held = Cost(self.held.work - cost.work, self.held.memory - cost.memory)

    def close(self) -> None:
        self.fetcher.close()

    def _refuse(self, reason: str, error: Exception) -> None:
        self.metrics.admission_refused.labels(reason).inc()
        raise error


class Ticket:
    """One request's claim on the server's budgets and URL fetch threads; `release` when it ends."""

    def __init__(self, admission: Admission):
        self.admission, self.held = admission, Cost()

    def reserve(self, cost: Cost) -> None:
        self.admission.take(cost, self.held)
        self.held = self.held + cost

    def release(self) -> None:
        held, self.held = self.held, Cost()
        self.admission.give_back(held)

    async def fetch(self, url: str) -> bytes:
        return await self.admission.fetcher.fetch(url)


def _mb(size: int) -> str:
    return f"{size / MB:.1f}"
