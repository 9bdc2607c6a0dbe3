"""ImageBind (text, image, audio; 1024-d for huge) from a user's local copy of the official checkpoint.

Nothing is downloaded: `checkpoint` is the official `imagebind_huge.pth` (or the same state dict as
.safetensors) and `bpe_path` CLIP's `bpe_simple_vocab_16e6.txt.gz` (looked for next to the checkpoint when
not given). The network is ours (`imagebind_model`), named like the official one so the state dict loads
with strict=True; depth/thermal/IMU keys are ignored. Inputs follow the official `data.py`:
- text: CLIP byte-level BPE, lower-cased and whitespace-cleaned, 77 tokens (start + 75 + end), the
  embedding taken at the end token (the largest id of a row);
- image: shorter side resized to 224 (bicubic), centre crop 224, CLIP mean/std, repeated into 2 frames;
- audio: 16 kHz, three 2 s clips, Kaldi fbank 128 x 204 each (`audio_features`), clip embeddings
  normalised and averaged (`postprocess` re-normalises the mean).
Weights are CC BY-NC-SA 4.0: the licence string says so wherever the encoder is listed.
"""

from __future__ import annotations

import gzip
import html
import json
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from bonds.encoders.base import Audio, Encoded, Encoder
from bonds.encoders.precision import resolve_dtype
from bonds.encoders.registry import ENCODERS
from bonds.errors import CheckpointError
from bonds.vectors import l2_normalize

CONFIG_FILENAME = "imagebind_config.json"
BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
_MAX_MERGES = 49152 - 256 - 2  # the official vocab: 256 bytes x 2 + 48894 merges + 2 specials = 49408
_OTHER_MODALITIES = ("depth", "thermal", "imu")


# ---------------------------------------------------------------- text: CLIP's BPE tokenizer


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character map of byte-level BPE: visible Latin-1 bytes map to themselves, the
    rest (controls, space, ...) to code points from 256 up, so every byte is a non-blank symbol."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in visible}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping  # insertion order (visible bytes, then the rest) is the order of the first 256 ids


def _token_pattern():
    """CLIP's pre-tokenizer: specials, English contractions, letter runs, single digits, symbol runs.

    `regex` (installed with transformers) has the Unicode classes; plain `re` approximates them.
    """
    try:
        import regex

        return regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"
                             r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", regex.IGNORECASE)
    except ImportError:
        import re

        return re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+",
                          re.IGNORECASE)


def _fix_text(text: str) -> str:
    """CLIP runs ftfy.fix_text first; without ftfy we keep the parts that matter for ordinary input."""
    try:
        import ftfy

        return ftfy.fix_text(text)
    except ImportError:
        text = unicodedata.normalize("NFC", text)
        return text.translate({0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"'})  # ftfy's uncurl_quotes


class ClipBpeTokenizer:
    """Text -> 77 ids: start token, up to 75 BPE tokens, end token, zero padding."""

    def __init__(self, bpe_path: str | Path, context_length: int = 77):
        with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        # line 0 is a version header; the official tokenizer uses the first 48894 merges only
        merges = [tuple(line.split()) for line in lines[1 : _MAX_MERGES + 1] if line.strip()]
        symbols = list(_bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.start, self.end = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]
        self.vocab_size = len(vocab)
        self.context_length = context_length
        self.pattern = _token_pattern()
        self._byte_map = _bytes_to_unicode()
        self._cache: dict[str, list[str]] = {}

    def _bpe(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        parts = [*word[:-1], word[-1] + "</w>"]  # the end-of-word marker rides on the last symbol
        while len(parts) > 1:
            best = min(pairwise(parts), key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        if len(self._cache) < 100_000:
            self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        text = html.unescape(html.unescape(_fix_text(text))).strip()
        text = " ".join(text.split()).lower()
        ids: list[int] = []
        for piece in self.pattern.findall(text):
            if piece in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.encoder[piece])
                continue
            word = "".join(self._byte_map[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self._bpe(word))
        return ids

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """(n, context_length) int64 ids, and whether each text was cut to fit."""
        rows = np.zeros((len(texts), self.context_length), dtype=np.int64)
        truncated = []
        for i, text in enumerate(texts):
            tokens = [self.start, *self.encode(str(text))]
            truncated.append(len(tokens) > self.context_length - 1)
            tokens = tokens[: self.context_length - 1] + [self.end]
            rows[i, : len(tokens)] = tokens
        return rows, truncated


# ---------------------------------------------------------------- images


def imagebind_pixels(image) -> Any:
    """RGB PIL image -> (3, 224, 224) uint8 tensor: torchvision's Resize(224, bicubic) and CenterCrop(224) as
    they compute on a PIL image. Kept as bytes until the batch is on the device (4x less to copy there)."""
    import torch
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    longer = int(IMAGE_SIZE * max(width, height) / min(width, height))
    size = (IMAGE_SIZE, longer) if width <= height else (longer, IMAGE_SIZE)
    image = image.resize(size, Image.BICUBIC)
    left, top = int(round((size[0] - IMAGE_SIZE) / 2.0)), int(round((size[1] - IMAGE_SIZE) / 2.0))
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def normalize_pixels(pixels_b3hw: Any) -> Any:
    """uint8 (b, 3, h, w) -> float32 ToTensor + Normalize(CLIP), on whatever device the pixels are."""
    import torch

    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=pixels_b3hw.device)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=pixels_b3hw.device)[:, None, None]
    return (pixels_b3hw.to(torch.float32) / 255.0 - mean) / std


def imagebind_image(image) -> Any:
    """RGB PIL image -> (3, 2, 224, 224) float32 tensor, as torchvision's Resize(224, bicubic),
    CenterCrop(224), ToTensor, Normalize(CLIP) compute it on a PIL image, repeated into 2 frames."""
    return normalize_pixels(imagebind_pixels(image).unsqueeze(0))[0].unsqueeze(1).repeat(1, 2, 1, 1)


# ---------------------------------------------------------------- checkpoint


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """A .pth/.pt (torch.load, weights only) or .safetensors file -> {name: tensor}."""
    import torch

    file = Path(path)
    if not file.is_file():
        raise CheckpointError(
            f"ImageBind checkpoint {str(file)!r} not found (expected the official imagebind_huge.pth)")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            try:  # memory-mapped: the huge checkpoint is 4.5 GB and need not be copied into RAM twice
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) files cannot be mapped
                state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling/parsing errors have many types; all mean "not a usable checkpoint"
        raise CheckpointError(f"cannot read ImageBind checkpoint {str(file)!r}: {exc}") from None
    for wrapper in ("state_dict", "model"):  # training scripts often nest the weights one level down
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(file)!r} is not a state dict of tensors")
    return state


def _kept(key: str) -> bool:
    parts = key.split(".")
    return not (len(parts) > 1 and parts[0].startswith("modality_") and parts[1] in _OTHER_MODALITIES)


def load_imagebind(path: str | Path, config: Any = "huge"):
    """Build the model on the meta device and assign the checkpoint's tensors, after checking that every
    key and shape fits (a clear error beats a half-loaded model)."""
    import torch

    from bonds.encoders.imagebind_model import ImageBindConfig, ImageBindModel

    cfg = ImageBindConfig.resolve(config)
    state = {k: v for k, v in read_state_dict(path).items() if _kept(k)}
    with torch.device("meta"):
        model = ImageBindModel(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                problems.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise CheckpointError(f"ImageBind checkpoint {str(path)!r} does not fit the config "
                              f"({cfg.vision_width}/{cfg.text_width}/{cfg.audio_width} wide): {'; '.join(problems)}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.float().eval()


# ---------------------------------------------------------------- the encoder


# Items per model call. On CUDA in bf16, ImageBind-huge's image and text towers reach their best rate at 256
# (H200: images 554/s at 16, 1,032 at 64, 1,035 at 256); audio (3 clips an item) at 64. On a CPU, 16.
GPU_BATCH = {"image": 256, "text": 256, "audio": 64}
CPU_BATCH = 16


@ENCODERS.register("imagebind")
class ImageBindEncoder(Encoder):
    modalities = ("text", "image", "audio")
    licence = "CC BY-NC-SA 4.0 (non-commercial)"
    max_batch_size = CPU_BATCH

    def __init__(self, checkpoint: str, bpe_path: str | None = None, config: str | dict[str, Any] | None = None,
                 device: str = "cpu", dtype: str = "auto", name: str = "imagebind"):
        import torch

        from bonds.encoders.imagebind_model import ImageBindConfig

        if config is None:
            # Sizes other than huge travel with the weights: an optional JSON of sizes beside the checkpoint,
            # so one space description file serves any ImageBind size.
            sidecar = Path(checkpoint).parent / CONFIG_FILENAME
            config = json.loads(sidecar.read_text()) if sidecar.is_file() else "huge"
        try:
            self.config = ImageBindConfig.resolve(config)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid ImageBind config: {exc}") from None
        bpe = Path(bpe_path) if bpe_path else Path(checkpoint).parent / BPE_FILENAME
        if not bpe.is_file():
            raise CheckpointError(
                f"CLIP BPE vocabulary {str(bpe)!r} not found (pass bpe_path={BPE_FILENAME!r} from ImageBind)")
        self.tokenizer = ClipBpeTokenizer(bpe, self.config.context_length)
        if self.tokenizer.vocab_size > self.config.vocab_size:
            raise CheckpointError(
                f"BPE vocabulary has {self.tokenizer.vocab_size} tokens; the model embeds {self.config.vocab_size}")
        self.name, self.dim = name, self.config.out_dim
        self.device = torch.device(device)
        self.precision = resolve_dtype(dtype, self.device)
        self.model = load_imagebind(checkpoint, self.config).to(self.device)

    def batch_size(self, modality: str) -> int:
        return GPU_BATCH[modality] if self.device.type == "cuda" else self.max_batch_size

    def prepare(self, modality: str, item: Any) -> Any:
        """Per item, on the pipeline's CPU workers: BPE ids (pure Python), resized pixels, or audio fbanks."""
        from bonds.encoders.audio_features import imagebind_audio_clips

        if modality == "text":
            ids, truncated = self.tokenizer([str(item)])
            return ids[0], truncated[0]
        if modality == "image":
            return imagebind_pixels(item)
        if not isinstance(item, Audio):
            raise TypeError(f"audio items must be bonds Audio, got {type(item).__name__}")
        return imagebind_audio_clips(item)

    def preprocess(self, modality: str, items: Sequence[Any]) -> tuple[Any, list[str | None]]:
        import torch

        notes: list[str | None] = [None] * len(items)
        if modality == "text":
            notes = [f"text cut to {self.config.context_length} tokens" if cut else None for _, cut in items]
            return torch.from_numpy(np.stack([ids for ids, _ in items])), notes
        return torch.stack(list(items)), notes

    def forward(self, modality: str, batch: tuple[Any, list[str | None]]) -> tuple[Any, list[str | None]]:
        tensor, notes = batch
        if self.device.type == "cuda":  # page-locked memory: the copy runs asynchronously, without a staging copy
            tensor = tensor.pin_memory()
        tensor = tensor.to(self.device, non_blocking=True)
        if modality == "image":  # normalised on the device; the model repeats the image into two frames
            tensor = normalize_pixels(tensor)
        return self.model.embed("vision" if modality == "image" else modality, tensor), notes

    def postprocess(self, modality: str, outputs: tuple[Any, list[str | None]]) -> Encoded:
        vectors, notes = outputs
        return Encoded(l2_normalize(vectors.float().cpu().numpy()), notes)
