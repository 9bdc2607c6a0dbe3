"""bf16 against fp32 for one adapter: the same weights built twice, the same real media through both."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

MIN_COSINE = 0.999  # the parity bound docs/deploy.md states for serving in bf16


def assert_bf16_parity(build: Callable[[str], Any], items: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """`build(dtype)` -> an encoder; every modality's vectors in bf16 within MIN_COSINE of fp32's.
    Returns the smallest cosine per modality (for the failure message and the docs)."""
    exact, fast = build("float32"), build("bfloat16")
    assert (exact.precision, fast.precision) == ("float32", "bfloat16")
    assert "bfloat16" in str(fast.info()["precision"])  # a string, or one per modality
    worst = {}
    for modality, batch in items.items():
        a, b = exact.encode(modality, batch).vectors, fast.encode(modality, batch).vectors
        assert a.dtype == b.dtype == np.float32 and not np.array_equal(a, b)  # bf16 really ran
        worst[modality] = float(np.min(np.sum(a * b, axis=1)))
    assert min(worst.values()) >= MIN_COSINE, worst
    return worst
