"""Media for the bad-input corpus, generated in memory: broken, odd and huge images and audio.

Huge images are real, valid files kept small on the wire by compression (1-bit grey rows of zeros), so
what is refused is what they declare, not a broken header.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
import soundfile as sf
from PIL import Image


# --- images ---------------------------------------------------------------------------------------------
def image(fmt: str = "PNG", size: tuple[int, int] = (24, 16), mode: str = "RGB", seed: int = 0, **save) -> bytes:
    """A noisy picture (noise makes truncation land inside the pixel data)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    picture = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def corrupt(data: bytes, start: float = 0.3, seed: int = 1) -> bytes:
    """The header kept, everything from `start` on replaced by random bytes."""
    cut = int(len(data) * start)
    noise = np.random.default_rng(seed).integers(0, 256, len(data) - cut, dtype=np.uint8).tobytes()
    return data[:cut] + noise


def png_bad_crc() -> bytes:
    """A PNG whose image-data chunk fails its CRC check."""
    data = bytearray(image("PNG", (32, 32)))
    at = data.index(b"IDAT") + 8
    data[at] ^= 0xFF
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_raw(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes] | None = None,
            data_rows: int | None = None) -> bytes:
    """A PNG written by hand: `rows` of raw scanline bytes, or `data_rows` rows of zeros (compressed as
    they are generated, so a 20000x20000 picture is a few tens of kilobytes); fewer rows than `height`
    make a file that declares more than it holds."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    stride = (width * channels * bit_depth + 7) // 8
    packer = zlib.compressobj(9)
    parts = []
    if rows is not None:
        parts = [packer.compress(b"\0" + row) for row in rows]
    else:
        zero_row = b"\0" * (stride + 1)
        for _ in range(height if data_rows is None else data_rows):
            parts.append(packer.compress(zero_row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


@cache
def huge_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit grey PNG of `width` x `height` zeros."""
    return png_raw(width, height, 1, 0)


def bomb_png() -> bytes:
    """100000 x 100000 declared, a handful of rows present: a decompression bomb's header."""
    return png_raw(100_000, 100_000, 8, 2, data_rows=4)


def webp_bomb() -> bytes:
    """A WebP whose extended header (VP8X) declares a canvas of about 68 billion pixels."""
    data = bytearray(image("WEBP", (64, 64)))
    data[12:16] = b"VP8X"
    return bytes(data)


def png_48bit() -> bytes:
    rng = np.random.default_rng(2)
    rows = [rng.integers(0, 256, 8 * 6, dtype=np.uint8).tobytes() for _ in range(8)]
    return png_raw(8, 8, 16, 2, rows=rows)


def png_16bit_grey() -> bytes:
    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")  # mode I;16
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (20, 20), i * 40) for i in range(5)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
       b'<rect width="64" height="64" fill="red"/></svg>')


def random_bytes(n: int = 4096, seed: int = 3) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# --- audio ----------------------------------------------------------------------------------------------
def wav(seconds: float = 0.5, rate: int = 16_000, channels: int = 1, subtype: str = "PCM_16",
        fmt: str = "WAV", fill: float | None = None) -> bytes:
    """A tone (or a constant `fill`, e.g. NaN) as a sound file of the given layout."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    tone = 0.4 * np.sin(2 * np.pi * 440.0 * t) if fill is None else np.full(n, fill)
    samples = np.repeat(tone[:, None], channels, axis=1).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype=subtype, format=fmt)
    return buffer.getvalue()
