"""The precision an encoder computes in, per device: `dtype="auto"` is bfloat16 on CUDA and float32 on CPU.

Lower precision runs under `torch.autocast`: matrix products and convolutions in bf16/fp16, while the ops
autocast keeps in float32 (layer and batch norms, softmax, reductions) stay there, so one mechanism serves
every torch encoder and their weights load unchanged. Outputs are turned back into float32 before they are
normalised. Parity with float32 is tested per adapter (cosine >= 0.999 on real media).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype: str | None, device: Any) -> str:
    """"auto" (or None) -> "bfloat16" on CUDA, "float32" elsewhere; other names checked and returned."""
    name = "auto" if dtype is None else str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if name != "auto":
        if name == "float16" and _device_type(device) == "cpu":
            raise ValueError("dtype 'float16' is for CUDA devices; on the CPU use 'bfloat16' or 'float32'")
        return name
    return "bfloat16" if _device_type(device) == "cuda" else "float32"


def autocast(precision: str, device: Any) -> AbstractContextManager:
    """The context a forward pass runs in: autocast to bfloat16/float16, or nothing (float32, or a model that
    computes in a type of its own, such as CTranslate2's int8)."""
    if precision not in ("bfloat16", "float16"):
        return nullcontext()
    import torch

    return torch.autocast(_device_type(device), dtype=getattr(torch, precision))


def _device_type(device: Any) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]
