"""InternVL-C (image-text, 768-d) from a user's local copy of InternVL-14B-224px, as FreeBind uses it.

The model's own code ships in its folder, so it is loaded with `trust_remote_code` and
`local_files_only` (never a network call). Inputs follow the model card: CLIP image processor from the
folder; the slow tokenizer with `add_eos_token=True` and pad id 0; texts prefixed with "summarize:",
padded to 80 tokens; `encode_image(..., mode="InternVL-C")` and `encode_text(...)`, then L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bonds.encoders.base import Encoded, Encoder
from bonds.encoders.precision import resolve_dtype
from bonds.encoders.registry import ENCODERS
from bonds.errors import CheckpointError
from bonds.vectors import l2_normalize

GPU_BATCH = 64  # InternViT-6B is ~20x ImageBind-huge's vision tower per image: smaller calls fill a GPU


@ENCODERS.register("internvl_c")
class InternVLCEncoder(Encoder):
    modalities = ("text", "image")

    def __init__(self, path: str, device: str = "cpu", dtype: str | None = "auto", prefix: str = "summarize:",
                 max_length: int = 80, licence: str = "MIT (InternVL); see the model card", name: str = "internvl_c"):
        from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise CheckpointError(
                f"InternVL-C folder {str(folder)!r} has no config.json (expected a local model folder)")
        self.name, self.licence, self.prefix, self.max_length = name, licence, prefix, int(max_length)
        self.device = torch.device(device)
        # bf16 is the released dtype on GPU ("auto" there); CPUs compute it slowly, so they default to fp32.
        # The weights are loaded in that dtype (14 GB in fp32 would not fit beside the rest).
        self.precision = resolve_dtype(dtype, self.device)
        self.dtype = getattr(torch, self.precision)
        if self.device.type == "cuda":
            self.max_batch_size = GPU_BATCH
        self.model = AutoModel.from_pretrained(
            str(folder), trust_remote_code=True, local_files_only=True, dtype=self.dtype
        ).to(self.device).eval()
        self.processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=False, add_eos_token=True,
                                                       local_files_only=True)
        self.tokenizer.pad_token_id = 0  # as the model card sets it
        self.dim = int(getattr(self.model.config, "clip_embed_dim", 0) or self._probe_dim())

    def _probe_dim(self) -> int:
        with torch.inference_mode():
            return int(self.forward("text", self.preprocess("text", ["a"])).shape[-1])

    def preprocess(self, modality: str, items: Sequence[Any]) -> torch.Tensor:
        if modality == "text":
            texts = [self.prefix + str(t) for t in items]
            return self.tokenizer(texts, return_tensors="pt", max_length=self.max_length, truncation=True,
                                  padding="max_length").input_ids
        return torch.stack(list(items))

    def prepare(self, modality: str, item: Any) -> Any:
        """An image's pixel values, on the pipeline's CPU workers; texts are tokenised together."""
        return item if modality == "text" else self.processor(images=[item], return_tensors="pt").pixel_values[0]

    def forward(self, modality: str, batch: torch.Tensor) -> torch.Tensor:
        if modality == "text":
            return self.model.encode_text(batch.to(self.device))
        return self.model.encode_image(batch.to(self.device, self.dtype), mode="InternVL-C")

    def postprocess(self, modality: str, outputs: torch.Tensor) -> Encoded:
        return Encoded(l2_normalize(outputs.float().cpu().numpy()))
