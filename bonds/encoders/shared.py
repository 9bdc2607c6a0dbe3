"""What the offline models' encoders share: one loaded copy of each model per process and device, and
the device check.

A service may build "minilm" and "starter" side by side, and the starter builds MiniLM and EfficientNet
inside itself: they all take their weights from one cache here, whose lock keeps concurrent first calls
from loading a model twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

GPU_BATCH = 256  # texts and images per call on CUDA, sized for throughput as ImageBind's towers are

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def shared_model(kind: str, device: str, load: Callable[[], Any]) -> Any:
    """The one copy of `kind` on `device` in this process, loaded by `load()` on first use."""
    with _MODELS_LOCK:
        if (kind, device) not in _MODELS:
            _MODELS[(kind, device)] = load()
        return _MODELS[(kind, device)]


def torch_device(device: str) -> torch.device:
    """`device` as torch reads it, refused when it names CUDA on a machine without."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use device='cpu'")
    return resolved
