"""ConSE (Norouzi et al. 2014): an image classifier's posterior turned into a text-space vector, the
top-k classes' renormalised probabilities weighting the embeddings of those classes' prototype texts.

`ConseImages` gives a text encoder an image modality this way: the starter's EfficientNet-Lite0 classifies the
photo and the encoder's own embeddings of the class names are mixed. The starter embeds photos so in MiniLM's
space; the e5 encoder can (`conse_images=True`), which is the ConSE-in-e5 photo the 1,000-class evaluation
takes as its reference, and what lets a combination bond mix photos as it mixes text (docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch

from bonds.encoders.base import Encoder
from bonds.encoders.efficientnet import EfficientNetLite0Encoder
from bonds.encoders.shared import shared_model
from bonds.vectors import l2_normalize

# Prototype recipes: the English text(s) each ImageNet class is embedded as (several are averaged).
PROTOTYPE_RECIPES: dict[str, tuple[str, ...]] = {
    "name": ("{c}",),
    "photo": ("a photo of a {c}.",),
    # CLIP's seven-template ImageNet ensemble subset (Radford et al. 2021, prompt-engineering notebook)
    "ensemble": ("itap of a {c}.", "a bad photo of the {c}.", "a origami {c}.", "a photo of the large {c}.",
                 "a {c} in a video game.", "art of the {c}.", "a photo of the small {c}."),
}
DEFAULT_RECIPE = "name"


def imagenet_classnames() -> list[str]:
    """The 1000 English ImageNet-1k class names shipped in `bonds/data` (CLIP_benchmark, MIT)."""
    text = resources.files("bonds").joinpath("data/en_classnames.json").read_text(encoding="utf-8")
    return list(json.loads(text)["imagenet1k"])


def class_prototypes(text_encoder: Encoder, recipe: str = DEFAULT_RECIPE) -> np.ndarray:
    """`(1000, d)` unit-norm embeddings of the ImageNet classes under `recipe` by a text encoder (MiniLM)."""
    if recipe not in PROTOTYPE_RECIPES:
        raise ValueError(f"unknown prototype recipe {recipe!r}; valid: {', '.join(PROTOTYPE_RECIPES)}")
    names = imagenet_classnames()
    total = np.zeros((len(names), text_encoder.dim), dtype=np.float32)
    for template in PROTOTYPE_RECIPES[recipe]:
        total += text_encoder.encode("text", [template.format(c=name) for name in names]).vectors
    return l2_normalize(total)


def conse(logits_bk: torch.Tensor, prototypes_cd: torch.Tensor, topk: int) -> torch.Tensor:
    """Convex combination of the top-k classes' prototypes, weighted by their renormalised probabilities."""
    probs_bk = torch.softmax(logits_bk.float(), dim=-1)
    top_p, top_i = probs_bk.topk(topk, dim=-1)
    weights_bk = top_p / top_p.sum(dim=-1, keepdim=True)
    return torch.einsum("bk,bkd->bd", weights_bk, prototypes_cd[top_i])


class ConseImages:
    """The image modality of a text encoder: photos classified by EfficientNet-Lite0, the top-k classes'
    renormalised probabilities weighting `text_encoder`'s embeddings of the class prototypes (`recipe`).

    The prototypes are embedded once per process (`key` names the text encoder's weights and options), in
    whatever precision the text encoder runs; an encoder whose own precision is lower passes a float32 twin
    as `exact` so that its photos do not depend on it. Logits are shared through a `LogitsMemo`: a space whose
    starter and e5 both embed a photo classifies it once.
    """

    def __init__(self, text_encoder: Encoder, key: str, *, device: Any = "cpu", topk: int = 10,
                 recipe: str = DEFAULT_RECIPE, runtime: str = "auto", exact: Encoder | None = None):
        if not 1 <= int(topk) <= 1000:
            raise ValueError(f"topk must be between 1 and 1000, got {topk!r}")
        self.topk = int(topk)
        # the classifier keeps its own precision rule (float32: see efficientnet_precision)
        self.classifier = EfficientNetLite0Encoder(device=str(device), output="logits", runtime=runtime)
        self.device = self.classifier.device
        texts = exact or text_encoder
        self.prototypes_cd = torch.from_numpy(
            shared_model(f"prototypes:{key}:{recipe}", str(self.device), lambda: class_prototypes(texts, recipe))
        ).to(self.device)
        # one memo per classifier that computes alike (its runtime and precision), whoever embeds with it
        self.memo = shared_model(f"logits-memo:{self.classifier.runtime}:{self.classifier.precision}",
                                 str(self.device), LogitsMemo)
        self.memo.register(self)
        # every ConseImages prepares pixels alike (the classifier's size and scaling), whatever it runs on
        self.pixels = shared_model(f"pixels-memo:{self.classifier.resize}", "cpu", PixelsMemo)

    @property
    def precision(self) -> str:
        return self.classifier.precision

    @property
    def batch_size(self) -> int:
        return self.classifier.max_batch_size

    def prepare(self, item: Any) -> tuple[torch.Tensor, bytes | None]:
        """The classifier's pixels and their digest, on the pipeline's CPU workers (the model thread only looks
        up); prepared once for sibling encoders embedding the same photo object (`PixelsMemo`); no digest while
        this is the process's one ConSE encoder, which has no sibling to share with."""
        if self.memo.readers <= 1:
            return self.classifier.prepare("image", item), None
        return self.pixels.prepared(item, self, self._digested)

    def _digested(self, item: Any) -> tuple[torch.Tensor, bytes]:
        pixels = self.classifier.prepare("image", item)
        return pixels, LogitsMemo.digest(pixels)

    def preprocess(self, items: Sequence[tuple[torch.Tensor, bytes | None]]) -> tuple[torch.Tensor, list]:
        return self.classifier.preprocess("image", [pixels for pixels, _ in items]), [digest for _, digest in items]

    def forward(self, batch: tuple[torch.Tensor, list[bytes | None]]) -> torch.Tensor:
        pixels, digests = batch
        if None in digests:  # prepared before a sibling registered, or alone in the process
            logits = self.classifier.forward("image", pixels)
        else:
            logits = self.memo.logits(pixels, digests, lambda rows: self.classifier.forward("image", rows), self)
        return conse(logits.to(self.device), self.prototypes_cd, self.topk)


class LogitsMemo:
    """The classifier's logits by the digest of the pixels, handed from the encoder that classifies a photo to
    a sibling that embeds it too: in a space whose starter and e5 (`conse_images`) both embed photos, the
    network runs once per photo. A row is read once, by an encoder other than the one that computed it, and
    is gone; an encoder never reads its own rows, and rows nobody read go after `ttl_s` (or when `size` newer
    ones push them out). So the memo shares one request's work between sibling encoders and never caches a
    photo for later requests (a benchmark that repeats photos measures the network). Encoders register while
    they live; with one registered nothing is digested or stored.

    A served space runs its encoders' batches side by side, so the sibling usually asks while the row is
    still being computed: a photo being classified is marked, and the sibling waits for it (after computing
    its own unmarked photos, so two encoders never wait on each other) instead of classifying it again. If the
    classifying call fails or does not answer within `wait_s`, the sibling classifies the photo itself.
    Logits are a pure function of the pixels, so a row read is the row the network would give. At most 1,024
    rows of 1,000 float32 logits: 4 MB."""

    def __init__(self, size: int = 1024, ttl_s: float = 5.0, wait_s: float = 60.0):
        self.size, self.ttl_s, self.wait_s = size, ttl_s, wait_s
        self.readers = 0
        self._rows: OrderedDict[bytes, _Row] = OrderedDict()
        self._lock = threading.Lock()

    def register(self, encoder: object) -> None:
        """Count `encoder` as a reader while it lives."""
        with self._lock:
            self.readers += 1
        weakref.finalize(encoder, self._unregister)

    def _unregister(self) -> None:
        with self._lock:
            self.readers -= 1

    @staticmethod
    def digest(pixels: torch.Tensor) -> bytes:
        return hashlib.blake2b(pixels.contiguous().numpy().tobytes(), digest_size=16).digest()

    def logits(self, pixels: torch.Tensor, digests: Sequence[bytes],
               network: Callable[[torch.Tensor], torch.Tensor], owner: object = None) -> torch.Tensor:
        """`(n, 1000)` logits on the CPU for `owner` (the calling encoder): rows a sibling computed or is
        computing, the network run on the rest."""
        me = id(owner)
        rows: list[torch.Tensor | None] = [None] * len(digests)
        mine: dict[bytes, list[int]] = {}  # digest -> positions this call computes
        theirs: dict[int, _Row] = {}  # position -> a row being computed elsewhere
        now = time.monotonic()
        with self._lock:
            while self._rows and next(iter(self._rows.values())).born < now - self.ttl_s:
                self._rows.popitem(last=False)[1].ready.set()
            for i, d in enumerate(digests):
                if d in mine:
                    mine[d].append(i)
                    continue
                row = self._rows.get(d)
                if row is not None and row.logits is None:
                    # being classified: by a sibling, or by this encoder on another thread (an in-process caller
                    # may embed from several); replacing the mark would leave its waiters waiting
                    theirs[i] = row
                elif row is None or row.owner == me:
                    mine[d] = [i]
                    self._rows[d] = _Row(me, now)
                    self._rows.move_to_end(d)
                else:
                    del self._rows[d]  # read once
                    rows[i] = row.logits
        if mine:
            self._compute(pixels, mine, rows, network, me)
        for i, row in theirs.items():
            if row.ready.wait(self.wait_s) and row.logits is not None:
                with self._lock:
                    if row.owner != me and self._rows.get(digests[i]) is row:
                        del self._rows[digests[i]]  # a sibling's row: read once (its own stays for the sibling)
                rows[i] = row.logits
            else:  # the classifying call failed or hangs: classify it here
                rows[i] = network(pixels[i : i + 1]).detach().float().cpu()[0]
        return torch.stack(rows)

    def _compute(self, pixels, mine: dict[bytes, list[int]], rows: list, network, me: int) -> None:
        firsts = [positions[0] for positions in mine.values()]
        try:
            computed = network(pixels[firsts]).detach().float().cpu()
        except BaseException:
            with self._lock:
                for d in mine:
                    row = self._rows.get(d)
                    if row is not None and row.owner == me and row.logits is None:
                        del self._rows[d]
                        row.ready.set()  # waiters see no logits and classify themselves
            raise
        with self._lock:
            for (d, positions), logits in zip(mine.items(), computed, strict=True):
                for i in positions:
                    rows[i] = logits
                row = self._rows.get(d)
                if row is not None and row.owner == me and row.logits is None:
                    row.logits = logits
                    row.ready.set()
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)[1].ready.set()  # a waiter on a row pushed out classifies itself


class _Row:
    """A photo's logits in the memo, by the encoder computing them: None while it runs (`ready` is set when
    they are in, or the row is gone)."""

    def __init__(self, owner: int, born: float):
        self.owner, self.born = owner, born
        self.logits: torch.Tensor | None = None
        self.ready = threading.Event()


class PixelsMemo:
    """A photo's prepared pixels (resized, cropped, scaled, digested: ~5 ms of CPU), handed from the sibling
    encoder that prepared the photo object to the other: a served space gives its encoders the same decoded
    photo, and both prepare it on the pipeline's workers at about the same time. Like `LogitsMemo`, an entry
    is read once, by an encoder other than the one that made it, and gone; unread entries go after `ttl_s` or
    when `size` newer ones push them out (at most 64 x 0.6 MB), so nothing is kept for later requests.
    Entries are keyed by the photo object, held by a weak reference: a new object at a dead one's address is
    not taken for it. A sibling asking while the photo is being prepared waits for it (the preparing thread is
    running it, so the wait is that one photo's work, at most `wait_s`); if that fails it prepares the photo
    itself, and meets the same error on a bad one."""

    def __init__(self, size: int = 64, ttl_s: float = 5.0, wait_s: float = 60.0):
        self.size, self.ttl_s, self.wait_s = size, ttl_s, wait_s
        self._entries: OrderedDict[int, _Prepared] = OrderedDict()
        self._lock = threading.Lock()

    def prepared(self, item: Any, owner: object, prepare: Callable[[Any], Any]) -> Any:
        """`prepare(item)` for `owner`, or what a sibling prepared from this very object."""
        try:
            ref = weakref.ref(item)
        except TypeError:  # not a photo object the engine hands to several encoders
            return prepare(item)
        key, me, now = id(item), id(owner), time.monotonic()
        with self._lock:
            while self._entries and next(iter(self._entries.values())).born < now - self.ttl_s:
                self._entries.popitem(last=False)
            entry = self._entries.get(key)
            if entry is not None and entry.ref() is item and entry.owner != me:
                del self._entries[key]  # read once
                mine = None
            else:  # new, or its own (the same photo twice in one call), or a dead object's: prepared here
                entry = mine = self._entries[key] = _Prepared(ref, me, now)
                self._entries.move_to_end(key)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        if mine is not None:
            return self._prepare(mine, item, prepare)
        if entry.ready.wait(self.wait_s) and entry.ok:
            return entry.value
        return prepare(item)

    def _prepare(self, entry: _Prepared, item: Any, prepare: Callable[[Any], Any]) -> Any:
        try:
            entry.value = prepare(item)
            entry.ok = True
            return entry.value
        except BaseException:
            with self._lock:
                if self._entries.get(id(item)) is entry:
                    del self._entries[id(item)]
            raise
        finally:
            entry.ready.set()


class _Prepared:
    """A photo object's prepared pixels in the memo: `ready` is set once they are in (`ok`) or failed."""

    def __init__(self, ref: weakref.ref, owner: int, born: float):
        self.ref, self.owner, self.born = ref, owner, born
        self.value: Any = None
        self.ok = False
        self.ready = threading.Event()
