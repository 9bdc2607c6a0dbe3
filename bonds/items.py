"""What `Space.embed` accepts per modality, turned into the decoded items encoders take.

Encoders take text as `str`, images as RGB `PIL.Image.Image` and audio as `Audio`. Library callers
also hold file paths, raw bytes (a file's content) and images in other modes; this is where those
become the decoded kind, with the same decoders and limits as the service (bonds.media), so a path
and the bytes of that file give the same vector. Already-decoded items pass through untouched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bonds.encoders.base import Audio
from bonds.errors import MediaError
from bonds.media import DEFAULT_LIMITS, MediaLimits, decode_audio, decode_image


def as_items(modality: str, items: Sequence[Any], limits: MediaLimits = DEFAULT_LIMITS) -> list[Any]:
    """`items` as the encoders of `modality` take them; a `MediaError` names the position of a bad one.

    text: `str`. image: a `PIL.Image.Image` (any mode), a path (`str` or `os.PathLike`) or the file's
    bytes. audio: an `Audio`, a path or the file's bytes (WAV, FLAC, OGG, MP3).
    """
    if isinstance(items, str | bytes):  # one item where a sequence was meant: never iterate its characters
        raise MediaError(f"pass a list of {modality} items, e.g. [{items!r:.40}]")
    convert = _CONVERTERS.get(modality)
    if convert is None:
        return list(items)  # the space's check_modality says which modalities exist
    out = []
    for i, item in enumerate(items):
        try:
            out.append(convert(item, limits))
        except MediaError as exc:
            exc.index = i
            raise
    return out


def _text(item: Any, limits: MediaLimits) -> str:
    # no length limit here: that is a service's guard against clients, and encoders truncate long texts
    if not isinstance(item, str):
        raise MediaError(f"a text item is a str, not {type(item).__name__}")
    return item


def _image(item: Any, limits: MediaLimits):
    from PIL import Image

    if isinstance(item, Image.Image):
        return item if item.mode == "RGB" else item.convert("RGB")
    return decode_image(_read(item, "image"), limits)


def _audio(item: Any, limits: MediaLimits) -> Audio:
    if isinstance(item, Audio):
        return item
    return decode_audio(_read(item, "audio"), limits)


def _read(item: Any, what: str) -> bytes:
    """A file's bytes: bytes as they are, a path read; anything else is named in the error."""
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if not path.is_file():
            raise MediaError(f"{what} path {str(path)!r} is not a file")
        return path.read_bytes()
    if isinstance(item, np.ndarray) and what == "audio":
        raise MediaError("a bare array has no sample rate: pass Audio(samples, sample_rate)")
    raise MediaError(f"an {what} item is a path, bytes or a decoded {what}, not {type(item).__name__}")


_CONVERTERS = {"text": _text, "image": _image, "audio": _audio}
