"""Image-text (CLIP, SigLIP) and audio-text (CLAP) experts from a user's local transformers model folder.

Folders load with `local_files_only=True`, so nothing is fetched; each model keeps its own processor
settings (CLIP pads to the longest text, SigLIP to its fixed length as it was trained; CLAP audio is
resampled to the feature extractor's rate). CLAP's feature extractor picks random crops of long audio;
a service must give the same vector twice, so long audio is cropped deterministically here (see
`ClapEncoder._audio_features`). `transformers` is imported only when an encoder is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bonds.encoders.audio_features import resample
from bonds.encoders.base import Audio, Encoded, Encoder
from bonds.encoders.precision import resolve_dtype
from bonds.encoders.registry import ENCODERS
from bonds.errors import CheckpointError
from bonds.vectors import l2_normalize

DEFAULT_LICENCE = "see the model card"
CLAP_TEXT_TOKENS = 77  # LAION-CLAP tokenises captions to 77 tokens in training and evaluation
# Items per model call on CUDA (bf16): sized for throughput as ImageBind's towers are (not yet measured
# for these models); a CPU keeps the default 32.
CLIP_GPU_BATCH, CLAP_GPU_BATCH = 256, 64


def _model_folder(path: str, what: str) -> Path:
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{what} folder {str(folder)!r} has no config.json (expected a local model folder)")
    return folder


def _features(output: Any) -> Any:
    """transformers 4 returns the projected features; 5 returns an output whose pooler_output holds them."""
    return output if hasattr(output, "detach") else output.pooler_output


def _as_audio(item: Any) -> Audio:
    if not isinstance(item, Audio):
        raise TypeError(f"audio items must be bonds Audio, got {type(item).__name__}")
    return item


@ENCODERS.register("clip")
class HFImageTextEncoder(Encoder):
    """CLIP-family dual encoders (CLIP, SigLIP, SigLIP 2, ...): anything with get_text/image_features."""

    modalities = ("text", "image")

    def __init__(self, path: str, device: str = "cpu", dtype: str = "auto", licence: str = DEFAULT_LICENCE,
                 name: str = "clip"):
        import torch
        from transformers import AutoModel, AutoProcessor

        folder = _model_folder(path, "CLIP/SigLIP")
        self.name, self.licence = name, licence
        self.device = torch.device(device)
        self.precision = resolve_dtype(dtype, self.device)
        if self.device.type == "cuda":
            self.max_batch_size = CLIP_GPU_BATCH
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(self.device).eval()
        if not (hasattr(self.model, "get_text_features") and hasattr(self.model, "get_image_features")):
            raise CheckpointError(f"{type(self.model).__name__} in {str(folder)!r} is not an image-text dual encoder")
        self.processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        config = self.model.config
        # SigLIP was trained on texts padded to a fixed length (no attention mask): pad the same way
        self.text_padding = "max_length" if config.model_type.startswith("siglip") else True
        text_config = getattr(config, "text_config", config)
        limit = getattr(self.processor.tokenizer, "model_max_length", None) or 10**9
        self.max_text_tokens = int(min(limit, getattr(text_config, "max_position_embeddings", limit)))
        dim = getattr(config, "projection_dim", None) or getattr(text_config, "projection_size", None)
        self.dim = int(dim) if dim else self._probe_dim()

    def _probe_dim(self) -> int:
        import torch

        with torch.inference_mode():
            return int(self.forward("text", self.preprocess("text", ["a"])).shape[-1])

    def preprocess(self, modality: str, items: Sequence[Any]) -> Any:
        if modality == "text":
            batch = self.processor(text=[str(t) for t in items], padding=self.text_padding, truncation=True,
                                   max_length=self.max_text_tokens, return_tensors="pt")
            if self.text_padding == "max_length":
                # SigLIP's text tower attends over the padding (big_vision uses no mask; the pooled token is
                # the last position): recent tokenizers return a mask anyway, which would change the vectors
                return {"input_ids": batch["input_ids"]}
            return batch
        import torch

        return {"pixel_values": torch.stack(list(items))}

    def prepare(self, modality: str, item: Any) -> Any:
        """An image's pixel values, on the pipeline's CPU workers (the processor treats each image alone)."""
        if modality == "text":
            return item
        return self.processor(images=[item], return_tensors="pt")["pixel_values"][0]

    def forward(self, modality: str, batch: Any) -> Any:
        inputs = {k: v.to(self.device) for k, v in batch.items()}
        if modality == "text":
            return _features(self.model.get_text_features(**inputs))
        return _features(self.model.get_image_features(**inputs))

    def postprocess(self, modality: str, outputs: Any) -> Encoded:
        return Encoded(l2_normalize(outputs.float().cpu().numpy()))


@ENCODERS.register("clap")
class ClapEncoder(Encoder):
    """CLAP (LAION-CLAP as ported to transformers): text and audio, `projection_dim` wide (512)."""

    modalities = ("text", "audio")

    def __init__(self, path: str, device: str = "cpu", dtype: str = "auto", licence: str = DEFAULT_LICENCE,
                 name: str = "clap"):
        import torch
        from transformers import ClapModel, ClapProcessor

        folder = _model_folder(path, "CLAP")
        self.name, self.licence = name, licence
        self.device = torch.device(device)
        self.precision = resolve_dtype(dtype, self.device)
        if self.device.type == "cuda":
            self.max_batch_size = CLAP_GPU_BATCH
        self.model = ClapModel.from_pretrained(str(folder), local_files_only=True).to(self.device).eval()
        self.processor = ClapProcessor.from_pretrained(str(folder), local_files_only=True)
        extractor = self.processor.feature_extractor
        # the checkpoint's audio tower decides: fusion models take 4 mels (whole file + 3 crops), others 1
        self.fusion = bool(self.model.config.audio_config.enable_fusion)
        self.sample_rate = int(extractor.sampling_rate)
        self.max_samples = int(extractor.nb_max_samples)
        self.dim = int(self.model.config.projection_dim)

    def preprocess(self, modality: str, items: Sequence[Any]) -> dict[str, Any]:
        import torch

        if modality == "text":
            return dict(self.processor.tokenizer([str(t) for t in items], padding=True, truncation=True,
                                                 max_length=CLAP_TEXT_TOKENS, return_tensors="pt"))
        features = torch.from_numpy(np.stack(items).astype(np.float32))
        # One clip at a time: the extractor marks one random item of an all-short batch `is_longer` (a
        # training trick). For a batch of one that item is always the clip itself, so fusion models see
        # every clip as `is_longer`, independent of its batch-mates; non-fusion models ignore the flag.
        is_longer = torch.full((len(items), 1), self.fusion, dtype=torch.bool)
        return {"input_features": features, "is_longer": is_longer}

    def prepare(self, modality: str, item: Any) -> Any:
        """A clip's mel features, on the pipeline's CPU workers; texts are tokenised together in `preprocess`."""
        return item if modality == "text" else self._audio_features(_as_audio(item))

    def _audio_features(self, audio: Audio) -> np.ndarray:
        """One waveform -> the extractor's mel input (channels, frames, mel bins), without randomness.

        Short audio goes through the extractor unchanged (it repeats and pads, no randomness). Long audio:
        non-fusion models get the centre `max_length` samples (instead of a random crop); fusion models get
        the extractor's fusion stack (whole file shrunk + front/middle/back crops), taking the middle of
        each third's candidate range instead of a random start.
        """
        extractor = self.processor.feature_extractor
        wave = resample(audio.samples, audio.sample_rate, self.sample_rate).astype(np.float64)
        if len(wave) > self.max_samples and not self.fusion:
            start = (len(wave) - self.max_samples) // 2
            wave = wave[start : start + self.max_samples]
        if len(wave) <= self.max_samples:
            truncation = "fusion" if self.fusion else "rand_trunc"
            out = extractor([wave], sampling_rate=self.sample_rate, truncation=truncation, return_tensors="np")
            return np.asarray(out["input_features"][0])
        return self._fusion_stack(extractor._np_extract_fbank_features(wave, extractor.mel_filters))

    def _fusion_stack(self, mel: np.ndarray) -> np.ndarray:
        import torch

        extractor = self.processor.feature_extractor
        chunk = self.max_samples // extractor.hop_length + 1  # frames in max_length samples (centred STFT)
        total = mel.shape[0]
        if total == chunk:  # just over max_length samples, same frame count: the extractor stacks 4 copies
            return np.stack([mel] * 4)
        ranges = np.array_split(np.arange(total - chunk + 1), 3)
        starts = [int(r[len(r) // 2]) if len(r) else 0 for r in ranges]
        crops = [mel[s : s + chunk] for s in starts]
        whole = torch.nn.functional.interpolate(torch.from_numpy(mel)[None, None], size=[chunk, mel.shape[1]],
                                                mode="bilinear", align_corners=False)[0, 0].numpy()
        return np.stack([whole, *crops])

    def forward(self, modality: str, batch: dict[str, Any]) -> Any:
        inputs = {k: v.to(self.device) for k, v in batch.items()}
        if modality == "text":
            return _features(self.model.get_text_features(**inputs))
        return _features(self.model.get_audio_features(**inputs))

    def postprocess(self, modality: str, outputs: Any) -> Encoded:
        return Encoded(l2_normalize(outputs.float().cpu().numpy()))
