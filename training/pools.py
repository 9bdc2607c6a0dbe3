"""Pools: the unpaired unimodal data a bond is trained on, described by one string each.

    NAME=MODALITY:PATH[?field=F&label=L&start=S&stop=E&step=K]

PATH is a text file (one item a line, blank lines skipped, `.gz` allowed), a folder of images or audio
files (sorted, recursive, extensions in any case), or a `manifest.jsonl` whose `field` names a path
(relative to the manifest) or a text; a field holding a list (COCO's five captions) gives one item per
element. `start/stop/step` slice the
items, so training and evaluation can use disjoint lines of the same file. Items are listed cheaply
(ids and sources); media are decoded only when a batch is encoded.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from bonds.encoders import MODALITIES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# The default manifest field per modality, as the shared data's manifests name them.
DEFAULT_FIELDS = {"text": "text", "image": "image", "audio": "audio"}


@dataclass(frozen=True)
class PoolSpec:
    name: str
    modality: str
    path: str
    field: str | None = None
    label: str | None = None  # manifest field holding a class label (zero-shot evaluation)
    start: int = 0
    stop: int | None = None
    step: int = 1

    def to_string(self) -> str:
        query = {k: v for k, v in (("field", self.field), ("label", self.label)) if v}
        if self.start:
            query["start"] = str(self.start)
        if self.stop is not None:
            query["stop"] = str(self.stop)
        if self.step != 1:
            query["step"] = str(self.step)
        suffix = ("?" + "&".join(f"{k}={v}" for k, v in query.items())) if query else ""
        return f"{self.name}={self.modality}:{self.path}{suffix}"


@dataclass
class Pool:
    """The listed items of a pool: `ids[i]` names `sources[i]` (a text, or a file path)."""

    spec: PoolSpec
    ids: list[str]
    sources: list[str]
    labels: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, indices: range | list[int]) -> list[Any]:
        """Decoded items (str, PIL image, Audio) for some positions: what an encoder takes.

        An item that cannot be read or decoded is a ValueError naming the pool and the item's source.
        """
        from bonds import media
        from bonds.errors import FreeBindError

        items = []
        for i in indices:
            try:
                items.append(media.load(self.spec.modality, self.sources[i]))
            except (FreeBindError, OSError) as exc:
                where = self.sources[i] if self.spec.modality != "text" else f"item {self.ids[i]}"
                raise ValueError(f"pool {self.spec.name!r}: cannot read {where}: {exc}; "
                                 "fix or remove that file (or slice it out with start/stop/step)") from None
        return items


def parse_pool(text: str) -> PoolSpec:
    """`NAME=MODALITY:PATH?...` -> PoolSpec; a ValueError names what is wrong."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ValueError(f"pool {text!r} must look like NAME=MODALITY:PATH[?field=..&start=..&stop=..]")
    modality, sep, location = rest.partition(":")
    if not sep or modality not in MODALITIES:
        raise ValueError(f"pool {text!r}: modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    path, _, query = location.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=False))
    unknown = set(options) - {"field", "label", "start", "stop", "step"}
    if unknown:
        raise ValueError(f"pool {text!r}: unknown options {sorted(unknown)}; valid: field, label, start, stop, step")
    try:
        start, step = int(options.get("start", 0)), int(options.get("step", 1))
        stop = int(options["stop"]) if "stop" in options else None
    except ValueError:
        raise ValueError(f"pool {text!r}: start, stop and step must be integers") from None
    if step < 1 or start < 0:
        raise ValueError(f"pool {text!r}: start must be >= 0 and step >= 1")
    return PoolSpec(name, modality, path, options.get("field"), options.get("label"), start, stop, step)


def list_pool(spec: PoolSpec) -> Pool:
    """List a pool's items (ids, sources, labels) without decoding any media."""
    path = Path(spec.path)
    if not path.exists():
        raise FileNotFoundError(f"pool {spec.name!r}: {path} does not exist")
    if path.is_dir():
        suffixes = IMAGE_SUFFIXES if spec.modality == "image" else AUDIO_SUFFIXES
        if spec.modality == "text":
            raise ValueError(f"pool {spec.name!r}: a text pool is a file, not a folder")
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"pool {spec.name!r}: folder {path} holds no {spec.modality} files "
                             f"(looked for {', '.join(suffixes)}, any case, in it and its subfolders)")
        ids = [str(p.relative_to(path)) for p in files]
        sources, labels = [str(p) for p in files], None
    elif path.name.lower().endswith((".jsonl", ".jsonl.gz")):
        ids, sources, labels = _list_manifest(spec, path)
    else:
        if spec.modality != "text":
            raise ValueError(f"pool {spec.name!r}: {spec.modality} pools are folders or manifest.jsonl files")
        numbered = [(i, line) for i, line in enumerate(read_lines(path)) if line]  # blank lines are no items
        ids, sources = [f"line{i}" for i, _ in numbered], [line for _, line in numbered]
        labels = None
    if not ids:
        raise ValueError(f"pool {spec.name!r}: {path} has no items; check the path and the field")
    keep = range(len(ids))[spec.start : spec.stop : spec.step]
    if not keep:
        raise ValueError(f"pool {spec.name!r}: start={spec.start}, stop={spec.stop}, step={spec.step} leave none of "
                         f"its {len(ids)} items; change the slice")
    return Pool(
        spec, [ids[i] for i in keep], [sources[i] for i in keep], None if labels is None else [labels[i] for i in keep]
    )


def read_lines(path: Path) -> list[str]:
    """Stripped lines of a text file (gzip by suffix, any case), blank ones included so that the caller
    can number lines; callers skip the blank ones (they are no items)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle]


def _list_manifest(spec: PoolSpec, path: Path) -> tuple[list[str], list[str], list[str] | None]:
    key = spec.field or DEFAULT_FIELDS[spec.modality]
    ids, sources, labels = [], [], []
    for row_no, line in enumerate(read_lines(path)):
        if not line:
            continue
        row = json.loads(line)
        if key not in row:
            raise ValueError(f"pool {spec.name!r}: {path} line {row_no + 1} has no field {key!r} (has {sorted(row)})")
        values = row[key] if isinstance(row[key], list) else [row[key]]
        for j, value in enumerate(values):
            item_id = f"row{row_no}" if len(values) == 1 else f"row{row_no}.{j}"
            ids.append(item_id)
            sources.append(str(value) if spec.modality == "text" else str(path.parent / str(value)))
            if spec.label:
                if spec.label not in row:
                    raise ValueError(f"pool {spec.name!r}: {path} line {row_no + 1} has no label field {spec.label!r}")
                labels.append(str(row[spec.label]))
    return ids, sources, (labels if spec.label else None)
