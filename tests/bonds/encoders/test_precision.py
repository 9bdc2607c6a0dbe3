"""The precision rule: `dtype="auto"` is bfloat16 on CUDA and float32 elsewhere; names are checked."""

from __future__ import annotations

import pytest
import torch

from bonds.encoders.precision import autocast, resolve_dtype


def test_auto_is_bf16_on_cuda_and_fp32_on_cpu():
    assert resolve_dtype("auto", torch.device("cuda")) == "bfloat16"
    assert resolve_dtype(None, "cuda:1") == "bfloat16"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("torch.bfloat16", "cpu") == "bfloat16"


def test_bad_names_and_fp16_on_cpu_are_refused():
    with pytest.raises(ValueError, match="valid: auto, float32, bfloat16, float16"):
        resolve_dtype("int8", "cpu")
    with pytest.raises(ValueError, match="for CUDA"):
        resolve_dtype("float16", "cpu")


def test_autocast_lowers_matrix_products_only_below_float32():
    x = torch.randn(4, 8)
    with autocast("float32", "cpu"):
        assert (x @ x.T).dtype == torch.float32
    with autocast("bfloat16", "cpu"):
        assert (x @ x.T).dtype == torch.bfloat16
